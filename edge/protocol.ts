import { createHash } from 'node:crypto';
import { z } from 'zod';
import { ERROR_CODES, type ErrorBody as CommonErrorBody } from '../common/errors.ts';

/**
 * The edge's HTTP API, the one place it is spelled: paths, methods, header names, query parameters, content types,
 * Cache-Status values and a zod schema for every JSON body. The edge server (edge/server/) and its client
 * (edge/client/) both read it, and so does kdn where it signs edge requests. Requests are parsed strictly (an edge
 * refuses what it does not understand); responses let unknown fields through so an older client can talk to a
 * newer edge.
 *
 *   GET|HEAD /kv/<key>          the object (Range, If-Range, If-None-Match, Cache-Control: only-if-cached)
 *   PUT /kv/<key>               store a verified object -> 201 PutResponse
 *   DELETE /kv/<key>[?origin=]  purge it -> 200 DeleteResponse
 *   POST /warm                  WarmRequest -> 200 NDJSON, WarmProgress lines then one WarmSummary line
 *   GET /stats                  EdgeStats
 *   GET /metrics                Prometheus text
 *   GET|HEAD /healthz           Health
 *   GET /shm                    ShmInfo: where this edge mirrors its memory tier in shared memory (same-host readers)
 * Errors are ErrorBody with the status of common/http-errors.ts; a known path asked with another method is 405 with
 * an Allow header.
 */

export const EDGE_PATHS = {
  /** Followed by the object key, unescaped: keys are [A-Za-z0-9._=-/] only (storage/keys.ts). */
  kvPrefix: '/kv/',
  warm: '/warm',
  stats: '/stats',
  metrics: '/metrics',
  healthz: '/healthz',
  shm: '/shm',
} as const;

export type EdgeRoute = 'kv' | 'warm' | 'stats' | 'metrics' | 'healthz' | 'shm';
export type EdgeMethod = 'GET' | 'HEAD' | 'PUT' | 'DELETE' | 'POST';

/** The methods each route answers; any other is 405 Method Not Allowed. */
export const ROUTE_METHODS: Readonly<Record<EdgeRoute, readonly EdgeMethod[]>> = {
  kv: ['GET', 'HEAD', 'PUT', 'DELETE'],
  warm: ['POST'],
  stats: ['GET'],
  metrics: ['GET'],
  healthz: ['GET', 'HEAD'],
  shm: ['GET'],
};

/** Routes that --public-metrics leaves open to anyone. */
export const METRICS_ROUTES: ReadonlySet<EdgeRoute> = new Set(['stats', 'metrics']);

const FIXED_ROUTES = new Map<string, EdgeRoute>([
  [EDGE_PATHS.warm, 'warm'],
  [EDGE_PATHS.stats, 'stats'],
  [EDGE_PATHS.metrics, 'metrics'],
  [EDGE_PATHS.healthz, 'healthz'],
  [EDGE_PATHS.shm, 'shm'],
]);

/** Every route with its methods, for the hint of a 404: `GET|HEAD|PUT|DELETE /kv/<key>, POST /warm, ...`. */
export function describeRoutes(): string {
  return (Object.keys(ROUTE_METHODS) as EdgeRoute[])
    .map((route) => `${ROUTE_METHODS[route].join('|')} ${route === 'kv' ? `${EDGE_PATHS.kvPrefix}<key>` : EDGE_PATHS[route]}`)
    .join(', ');
}

/** The route a request path (without its query string) names, or undefined for none. */
export function edgeRouteOf(path: string): EdgeRoute | undefined {
  return path.startsWith(EDGE_PATHS.kvPrefix) ? 'kv' : FIXED_ROUTES.get(path);
}

/** The key part of a /kv/ path, still percent-encoded as sent. */
export function encodedKeyOf(path: string): string {
  return path.slice(EDGE_PATHS.kvPrefix.length);
}

/** The path of an object; `key` must have passed validateKey, whose characters are all literal in a URL path. */
export function kvPath(key: string): string {
  return `${EDGE_PATHS.kvPrefix}${key}`;
}

/** Query parameters of DELETE /kv/<key>: `origin=true` also deletes the object at the origin. */
export const EDGE_QUERY = { origin: 'origin' } as const;

export const DeleteQuery = z.object({ [EDGE_QUERY.origin]: z.enum(['true', 'false', '1', '0']).optional() }).strict();

/** The request target of a DELETE (which its token signs, query string included). */
export function deletePath(key: string, options: { origin?: boolean } = {}): string {
  return options.origin ? `${kvPath(key)}?${EDGE_QUERY.origin}=true` : kvPath(key);
}

/** Header names (lowercase, as node:http hands them over) the edge and its client exchange. */
export const EDGE_HEADERS = {
  /** The request token, format in common/edge-token.ts. */
  token: 'x-kdn-token',
  /** The hex SHA-256 of a PUT body, which the PUT's token signs. */
  bodyDigest: 'x-kdn-content-sha256',
  /** Which tier answered (RFC 9211), values in CACHE_STATUS. */
  cacheStatus: 'cache-status',
  /** Sent as `only-if-cached` to ask the tiers alone (RFC 9111); answers carry `no-store` on JSON bodies. */
  cacheControl: 'cache-control',
  contentType: 'content-type',
  contentLength: 'content-length',
  contentEncoding: 'content-encoding',
  etag: 'etag',
  ifNoneMatch: 'if-none-match',
  range: 'range',
  ifRange: 'if-range',
  contentRange: 'content-range',
  acceptRanges: 'accept-ranges',
  allow: 'allow',
  retryAfter: 'retry-after',
} as const;

export const ONLY_IF_CACHED = 'only-if-cached';

export const CONTENT_TYPES = {
  kv: 'application/octet-stream',
  json: 'application/json; charset=utf-8',
  ndjson: 'application/x-ndjson; charset=utf-8',
} as const;

/**
 * The Cache-Status value (RFC 9211) of every answer to GET/HEAD /kv/<key>. The cache is named `kdn-edge`;
 * `detail` always names where the answer came from.
 */
export const CACHE_STATUS = {
  /** Served from the memory tier. */
  memory: 'kdn-edge; hit; detail=memory',
  /** Served from the disk tier (now also in memory). */
  disk: 'kdn-edge; hit; detail=disk',
  /** Fetched from the origin, verified, stored in the tiers. */
  origin: 'kdn-edge; fwd=miss; stored; detail=origin',
  /** As `origin`, sharing another request's origin fetch. */
  originCollapsed: 'kdn-edge; fwd=miss; stored; collapsed; detail=origin',
  /** 404 remembered from a recent origin miss. */
  negative: 'kdn-edge; hit; detail=negative',
  /** 404: the origin does not have the key. */
  notFound: 'kdn-edge; fwd=miss; detail=not-found',
  /** 422: the origin's copy failed verification (not stored). */
  originCorrupt: 'kdn-edge; fwd=miss; detail=origin-corrupt',
  /** 502: the origin failed or refused. */
  originUnavailable: 'kdn-edge; fwd=miss; detail=origin-unavailable',
  /** 504: the origin did not answer in time. */
  originTimeout: 'kdn-edge; fwd=miss; detail=origin-timeout',
  /** 504: Cache-Control: only-if-cached and no tier holds the object (RFC 9111 section 5.2.1.7). */
  notCached: 'kdn-edge; fwd=miss; detail=not-cached',
} as const;

/** Which tier a Cache-Status value names, for clients. */
export type ServedFrom = 'memory' | 'disk' | 'origin' | 'negative' | 'not-cached' | 'unknown';

export function parseCacheStatus(value: string | null | undefined): ServedFrom {
  const detail = value ? /(?:^|;)\s*detail=([a-z-]+)/.exec(value)?.[1] : undefined;
  switch (detail) {
    case 'memory':
    case 'disk':
    case 'origin':
    case 'negative':
    case 'not-cached':
      return detail;
    default:
      return 'unknown';
  }
}

/** A POST /warm body is a list of keys, never large. */
export const WARM_BODY_LIMIT = 4 * 2 ** 20;
export const MAX_WARM_KEYS = 10_000;
export const MAX_WARM_CONCURRENCY = 32;

export const WarmRequest = z
  .object({
    keys: z.array(z.string()).min(1).max(MAX_WARM_KEYS),
    /** How many origin fetches this warm runs at once. */
    concurrency: z.number().int().min(1).max(MAX_WARM_CONCURRENCY).default(4),
  })
  .strict();
export type WarmRequest = z.input<typeof WarmRequest>;

const ErrorCode = z.enum(ERROR_CODES);

/** One NDJSON line of POST /warm per key, as it finishes. */
export const WarmProgress = z.object({
  key: z.string(),
  status: z.enum(['warmed', 'present', 'failed']),
  bytes: z.number().int().nonnegative(),
  error: z.object({ code: ErrorCode, message: z.string() }).optional(),
});
export type WarmProgressLine = z.infer<typeof WarmProgress>;

/** The last NDJSON line of POST /warm. */
export const WarmSummary = z.object({
  done: z.literal(true),
  keys: z.number().int().nonnegative(),
  warmed: z.number().int().nonnegative(),
  present: z.number().int().nonnegative(),
  failed: z.number().int().nonnegative(),
  bytes: z.number().int().nonnegative(),
});
export type WarmSummaryLine = z.infer<typeof WarmSummary>;

export const WarmLine = z.union([WarmSummary, WarmProgress]);

export const PutResponse = z.object({ key: z.string(), size: z.number().int().nonnegative(), etag: z.string().min(1) });
export type PutResponse = z.infer<typeof PutResponse>;

export const DeleteResponse = z.object({
  key: z.string(),
  deleted: z.object({ memory: z.boolean(), disk: z.boolean(), origin: z.boolean().optional() }),
});
export type DeleteResponse = z.infer<typeof DeleteResponse>;

export const Health = z.object({ status: z.literal('ok') });
export type Health = z.infer<typeof Health>;

/**
 * The same-host fast path. An edge started with a shared-memory directory keeps a copy of each memory-tier object
 * as a file in a private directory (mode 0700) on tmpfs, named by shmObjectName, next to an identity file holding a
 * random instance id. GET /shm (signed like every other route) names the directory and the id; a client that finds
 * the same id in the directory's identity file runs on the edge's host and may read objects from there instead of
 * over a socket, verifying them exactly as it verifies an HTTP body. `dir: null`: this edge has no such directory.
 */
export const ShmInfo = z.object({ dir: z.string().min(1).nullable(), instance: z.string().optional() });
export type ShmInfo = z.infer<typeof ShmInfo>;

/** The identity file inside an edge's shared-memory directory. */
export const SHM_IDENTITY_FILE = 'instance';

/** The file name of `key`'s object in an edge's shared-memory directory: flat, so no key can name a path outside it. */
export function shmObjectName(key: string): string {
  return `${createHash('sha256').update(key).digest('hex')}.kv`;
}

const count = z.number().nonnegative();

/** The JSON of GET /stats. */
export const EdgeStats = z.object({
  uptimeSeconds: count,
  memory: z.object({
    hits: count,
    misses: count,
    objects: count,
    bytes: count,
    /** Of `bytes`, those held in the edge's own memory; with a shared-memory mirror the rest lie only in its files. */
    heapBytes: count,
    budgetBytes: count,
    evictions: count,
  }),
  disk: z.object({
    hits: count,
    misses: count,
    objects: count,
    bytes: count,
    budgetBytes: count,
    evictions: count,
    corruptDropped: count,
    writeErrors: count,
    path: z.string(),
  }),
  origin: z.object({
    fetches: count,
    found: count,
    notFound: count,
    negativeHits: count,
    corrupt: count,
    errors: count,
    timeouts: count,
    bytes: count,
    collapsed: count,
    description: z.string(),
  }),
  /** The shared-memory mirror of the memory tier, when the edge has one (its reads are not seen by the edge). */
  shm: z.object({ dir: z.string(), writes: count, removes: count, writeErrors: count }).optional(),
  served: z.object({
    requests: count,
    /** Body bytes of GET responses (200 and 206) handed to clients. */
    bytesServed: count,
    notModified: count,
    partial: count,
    puts: count,
    deletes: count,
    errors: count,
    /** Requests refused for a missing, expired or wrong token (also counted in errors). */
    unauthorized: count,
  }),
});
export type EdgeStats = z.infer<typeof EdgeStats>;

/** Every error answer: common/errors.ts's ErrorBody (KdnError.toJSON), which the type annotation holds it to. */
export const ErrorBody: z.ZodType<CommonErrorBody> = z.object({
  error: z.object({
    code: ErrorCode,
    message: z.string(),
    hint: z.string().optional(),
    details: z.record(z.string(), z.unknown()).optional(),
  }),
});
