/**
 * Every route of the kdn API, as data: app.ts mounts each from its module's handlers, a known path asked with
 * another method answers 405 with the table's methods in `Allow`, the 404 hint lists the paths, metric labels are
 * the table's patterns, and README.md's API list is generated from it (`npx tsx tools/readme-api.ts`).
 */

export type RouteMethod = 'GET' | 'POST' | 'DELETE';

/** The route modules under ./routes/, each built from its own service(s) in app.ts. */
export type RouteModule = 'ops' | 'documents' | 'jobs' | 'query' | 'openai';

export interface RouteSpec {
  method: RouteMethod;
  /** An express path: literal segments and `:name` parameters, one segment each. */
  path: string;
  module: RouteModule;
  /** The handler's name among its module's handlers. */
  handler: string;
  /** One line for the README's API list and for clients. */
  description: string;
}

export const ROUTES = [
  { method: 'GET', path: '/healthz', module: 'ops', handler: 'health', description: 'liveness; needs no API key' },
  {
    method: 'GET',
    path: '/readyz',
    module: 'ops',
    handler: 'ready',
    description: "readiness: the engine is loaded and the origin answers (else the origin's error status); needs no API key",
  },
  {
    method: 'GET',
    path: '/metrics',
    module: 'ops',
    handler: 'metrics',
    description: 'Prometheus metrics; operator keys only, unless the server runs with KDN_METRICS_PUBLIC=true',
  },
  {
    method: 'GET',
    path: '/v1/status',
    module: 'ops',
    handler: 'status',
    description: 'the model, backend, device, codec, chunk size, origin, edges and engine queue depth; operator keys only',
  },
  {
    method: 'GET',
    path: '/v1/usage',
    module: 'ops',
    handler: 'usage',
    description: "the caller's tenant's documents, tokens and stored KV bytes",
  },
  {
    method: 'POST',
    path: '/v1/warm/plan',
    module: 'ops',
    handler: 'warmPlan',
    description: 'the edges and chunk objects of a namespace (or of some documents) and an edge token, for `kdn warm`',
  },
  {
    method: 'POST',
    path: '/v1/documents',
    module: 'documents',
    handler: 'upload',
    description: 'upload a document (JSON `{namespace, title, text}` or a multipart file): 202 with its ingest job',
  },
  {
    method: 'GET',
    path: '/v1/documents',
    module: 'documents',
    handler: 'list',
    description: 'the documents of a namespace (`?namespace=`)',
  },
  {
    method: 'GET',
    path: '/v1/documents/:id',
    module: 'documents',
    handler: 'get',
    description: 'one document: its chunks and the edge tier that holds each chunk object',
  },
  {
    method: 'DELETE',
    path: '/v1/documents/:id',
    module: 'documents',
    handler: 'remove',
    description: 'delete a document; its objects no other document or running ingest uses leave the origin and the edges',
  },
  {
    method: 'GET',
    path: '/v1/jobs',
    module: 'jobs',
    handler: 'list',
    description: "the caller's queries in flight and ingest jobs (`?status=`, `?kind=ingest|query`)",
  },
  { method: 'GET', path: '/v1/jobs/:id', module: 'jobs', handler: 'get', description: 'one ingest job and its progress' },
  {
    method: 'DELETE',
    path: '/v1/jobs/:id',
    module: 'jobs',
    handler: 'cancel',
    description:
      'cancel a queued or running query or ingest job (its request then answers 409 `CANCELLED`; the objects of an ingest that nothing else uses are deleted)',
  },
  {
    method: 'POST',
    path: '/v1/query',
    module: 'query',
    handler: 'ask',
    description: 'answer a question from named documents or retrieved chunks, with timings and cache tiers',
  },
  { method: 'GET', path: '/v1/models', module: 'openai', handler: 'models', description: 'OpenAI-compatible: the one model served' },
  { method: 'GET', path: '/v1/models/:id', module: 'openai', handler: 'model', description: 'OpenAI-compatible: the model, by its id' },
  {
    method: 'POST',
    path: '/v1/chat/completions',
    module: 'openai',
    handler: 'chat',
    description: 'OpenAI-compatible chat completion, with the knowledge to use in `kdn`',
  },
  {
    method: 'POST',
    path: '/v1/completions',
    module: 'openai',
    handler: 'completion',
    description: 'OpenAI-compatible text completion, with the knowledge to use in `kdn`',
  },
] as const satisfies readonly RouteSpec[];

type Route = (typeof ROUTES)[number];

/** The handler names the table gives a module: its module must export exactly these (checked by the compiler). */
export type HandlerName<M extends RouteModule> = Extract<Route, { module: M }>['handler'];

/** The route a request was for, or undefined: express's matching (case-insensitive, a trailing slash allowed). */
export function findRoute(method: string, path: string): RouteSpec | undefined {
  const asked = method.toUpperCase() === 'HEAD' ? 'GET' : method.toUpperCase();
  return ROUTES.find((route) => route.method === asked && pathMatches(route.path, path));
}

/** The routes at `path`, whatever their method. */
export function routesAt(path: string): RouteSpec[] {
  return ROUTES.filter((route) => pathMatches(route.path, path));
}

/** The methods the table answers at `path` (HEAD with GET, as express does), sorted; empty for a path it does not know. */
export function allowedMethods(path: string): string[] {
  const methods = new Set<string>(routesAt(path).map((route) => route.method));
  if (methods.has('GET')) methods.add('HEAD');
  return [...methods].sort();
}

/** The table's paths, each once, in table order. */
export function routePaths(): string[] {
  return [...new Set(ROUTES.map((route) => route.path))];
}

function pathMatches(pattern: string, path: string): boolean {
  const want = pattern.split('/');
  const got = (path.length > 1 && path.endsWith('/') ? path.slice(0, -1) : path).split('/');
  if (want.length !== got.length) return false;
  return want.every((segment, i) => (segment.startsWith(':') ? got[i] !== '' : segment.toLowerCase() === got[i]!.toLowerCase()));
}
