import { performance } from 'node:perf_hooks';
import express, { type Express, type NextFunction, type Request, type Response } from 'express';
import multer from 'multer';
import { KdnError, toKdnError } from '../../common/errors.ts';
import { codeForHttpStatus, sendError } from '../../common/http-errors.ts';
import { authenticate } from '../auth/authenticate.ts';
import { accessLog } from './access-log.ts';
import { isOpenAIPath, sendOpenAIError } from './openai-errors.ts';
import { mountRoutes } from './mount-routes.ts';
import { findRoute } from './route-table.ts';
import { documentHandlers } from './routes/documents.ts';
import { jobHandlers } from './routes/jobs.ts';
import { openAIHandlers } from './routes/openai.ts';
import { opsHandlers } from './routes/ops.ts';
import { queryHandlers } from './routes/query.ts';
import type { ApiServices } from './services.ts';

/**
 * The kdn REST API: the routes of route-table.ts, each module built from its own services. Every request but health
 * needs an API key; every error leaves through sendError as a typed JSON body (OpenAI's shape on its paths).
 */
export function createApp(services: ApiServices): Express {
  const app = express();
  app.disable('x-powered-by');
  app.set('query parser', 'simple');
  app.use(accessLog(services.log.child({ part: 'access' })));
  app.use(measure(services));
  app.use(authenticate(services.access));
  mountRoutes(app, {
    ops: opsHandlers(services.operations),
    documents: documentHandlers(services.documents, services.jobs),
    jobs: jobHandlers(services.jobs),
    query: queryHandlers(services.queries),
    openai: openAIHandlers(services.queries),
  });
  app.use((err: unknown, req: Request, res: Response, _next: NextFunction) => {
    const e = fromMiddleware(err);
    if (e.code === 'INTERNAL') services.log.error({ err, path: req.path, reqId: req.id }, 'request failed');
    else if (e.details?.['aborted'] === true)
      services.log.debug({ path: req.path, reqId: req.id }, 'client went away before sending its whole body');
    // A full queue or a rate limit says when to come back (kdn/scheduler, kdn/ingest/jobs.ts, warm plans).
    const retryAfterS = e.details?.retryAfterS;
    if (e.code === 'RATE_LIMITED' && typeof retryAfterS === 'number' && !res.headersSent) res.setHeader('retry-after', String(retryAfterS));
    if (isOpenAIPath(req.path)) sendOpenAIError(res, e);
    else sendError(res, e);
  });
  return app;
}

/**
 * Request count and latency per route, labelled with the table's pattern (ids would explode the label set), also for
 * requests answered before their route (a 401 or 429 from authentication); other paths and methods are 'unmatched'.
 */
function measure(services: ApiServices) {
  return (req: Request, res: Response, next: NextFunction): void => {
    const start = performance.now();
    res.on('finish', () => {
      const route = findRoute(req.method, req.path)?.path ?? 'unmatched';
      services.metrics.requests.inc({ route, method: req.method, status: String(res.statusCode) });
      services.metrics.latency.observe({ route }, (performance.now() - start) / 1000);
    });
    next();
  };
}

/** Body parsers and multer throw their own errors; give them our codes. */
function fromMiddleware(err: unknown): KdnError {
  if (err instanceof multer.MulterError) {
    return err.code === 'LIMIT_FILE_SIZE' || err.code === 'LIMIT_FIELD_VALUE'
      ? new KdnError('PAYLOAD_TOO_LARGE', `upload too large: ${err.message}`, {
          hint: 'raise --max-upload on the server or split the document',
        })
      : new KdnError('INVALID_ARGUMENT', `bad multipart upload: ${err.message}`, {
          hint: 'send one "file" field and optional "title", "namespace"',
        });
  }
  // The router's percent-decoding of a route parameter ("/v1/jobs/%ff").
  if (err instanceof URIError)
    return new KdnError('INVALID_ARGUMENT', `bad percent-encoding in the URL: ${err.message}`, {
      hint: 'escape ids with encodeURIComponent',
    });
  const type = (err as { type?: unknown }).type;
  if (type === 'entity.too.large') {
    const limit = (err as { limit?: unknown }).limit;
    return new KdnError('PAYLOAD_TOO_LARGE', `request body too large${typeof limit === 'number' ? ` (the limit is ${limit} bytes)` : ''}`, {
      hint: 'send a smaller body; for documents, split them or raise the limit with kdn serve --max-upload',
    });
  }
  if (type === 'entity.parse.failed') return unparsedJson((err as { body?: unknown }).body);
  if (type === 'encoding.unsupported' || type === 'charset.unsupported')
    return new KdnError('UNSUPPORTED_MEDIA_TYPE', (err as Error).message, { hint: 'send the body uncompressed, or gzip/deflate' });
  if (type === 'request.aborted')
    return new KdnError('INVALID_ARGUMENT', 'the client closed the connection before sending the whole body', {
      details: { aborted: true },
    });
  // Other body-parser errors (a broken gzip stream, a bad length) carry the 4xx status they mean.
  const status = (err as { status?: unknown }).status;
  if (typeof status === 'number' && status >= 400 && status < 500) {
    return new KdnError(codeForHttpStatus(status), `bad request body: ${(err as Error).message}`, {
      hint: 'check the body against its Content-Type, Content-Encoding and Content-Length',
    });
  }
  return toKdnError(err);
}

/** express.json refuses valid JSON that is not an object or array too (null, "str", 3): say what is wanted. */
function unparsedJson(body: unknown): KdnError {
  let value: unknown;
  try {
    value = JSON.parse(String(body));
  } catch {
    return new KdnError('INVALID_ARGUMENT', 'request body is not valid JSON', {
      hint: 'check the body is well-formed JSON (quoted names, commas, closing braces)',
    });
  }
  return new KdnError('INVALID_ARGUMENT', `the request body must be a JSON object, not ${value === null ? 'null' : typeof value}`, {
    hint: 'send the fields as one JSON object: {"field": value, ...}',
  });
}
