import { performance } from 'node:perf_hooks';
import express, { type Express, type NextFunction, type Request, type Response } from 'express';
import multer from 'multer';
import { KdnError, toKdnError } from '../../common/errors.ts';
import { sendError } from '../../common/http-errors.ts';
import { authenticate } from '../auth/authenticate.ts';
import { documentRoutes } from './routes/documents.ts';
import { jobRoutes } from './routes/jobs.ts';
import { openAIRoutes } from './routes/openai.ts';
import { opsRoutes } from './routes/ops.ts';
import { queryRoutes } from './routes/query.ts';
import type { KdnServices } from './services.ts';

/** The kdn REST API. Every request but health needs an API key; every error leaves through sendError as a typed JSON body. */
export function createApp(services: KdnServices): Express {
  const app = express();
  app.disable('x-powered-by');
  app.set('query parser', 'simple');
  app.use(measure(services));
  app.use(authenticate(services.access));
  app.use(opsRoutes(services));
  app.use(documentRoutes(services));
  app.use(jobRoutes(services));
  app.use(queryRoutes(services));
  app.use(openAIRoutes(services));
  app.use((req: Request) => {
    throw new KdnError('NOT_FOUND', `no route ${req.method} ${req.path}`, {
      hint: 'routes: /v1/documents, /v1/jobs, /v1/jobs/:id, /v1/query, /v1/chat/completions, /v1/completions, /v1/models, /healthz, /metrics',
    });
  });
  app.use((err: unknown, req: Request, res: Response, _next: NextFunction) => {
    const e = fromMiddleware(err);
    if (e.code === 'INTERNAL') services.log.error({ err, path: req.path }, 'request failed');
    // A full queue says when to come back (kdn/scheduler, kdn/ingest/jobs.ts).
    const retryAfterS = e.details?.retryAfterS;
    if (e.code === 'RATE_LIMITED' && typeof retryAfterS === 'number' && !res.headersSent) res.setHeader('retry-after', String(retryAfterS));
    sendError(res, e);
  });
  return app;
}

/** Request count and latency per route (the matched route pattern, so ids do not explode the label set). */
function measure(services: KdnServices) {
  return (req: Request, res: Response, next: NextFunction): void => {
    const start = performance.now();
    res.on('finish', () => {
      const route = (req.route as { path?: string } | undefined)?.path ?? 'unmatched';
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
      ? new KdnError('PAYLOAD_TOO_LARGE', `upload too large: ${err.message}`, { hint: 'raise --max-upload on the server or split the document' })
      : new KdnError('INVALID_ARGUMENT', `bad multipart upload: ${err.message}`, { hint: 'send one "file" field and optional "title", "namespace"' });
  }
  // The router's percent-decoding of a route parameter ("/v1/jobs/%ff").
  if (err instanceof URIError) return new KdnError('INVALID_ARGUMENT', `bad percent-encoding in the URL: ${err.message}`, { hint: 'escape ids with encodeURIComponent' });
  const type = (err as { type?: unknown }).type;
  if (type === 'entity.too.large') return new KdnError('PAYLOAD_TOO_LARGE', 'request body too large', { hint: 'send a smaller body' });
  if (type === 'entity.parse.failed') return new KdnError('INVALID_ARGUMENT', 'request body is not valid JSON');
  if (type === 'encoding.unsupported' || type === 'charset.unsupported') return new KdnError('UNSUPPORTED_MEDIA_TYPE', (err as Error).message);
  return toKdnError(err);
}
