import { randomUUID } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { pinoHttp } from 'pino-http';
import type { Logger } from '../../common/log.ts';

/** A request id a client or proxy sent is kept when it is short and plain, so logs join up across hops. */
const GIVEN_ID = /^[\w.:/+=-]{1,128}$/;

/**
 * Request ids and the access log: every response carries `x-request-id` (the client's, or a fresh UUID), and every
 * request ends in one JSON line with that id, method, path, status and duration. Headers are not logged: they carry
 * API keys.
 */
export function accessLog(log: Logger) {
  return pinoHttp({
    logger: log,
    genReqId(req: IncomingMessage, res: ServerResponse): string {
      const given = req.headers['x-request-id'];
      const id = typeof given === 'string' && GIVEN_ID.test(given) ? given : randomUUID();
      res.setHeader('x-request-id', id);
      return id;
    },
    // Probes come every few seconds; their ids are still set, they are just not logged.
    autoLogging: { ignore: (req) => req.method === 'GET' && (pathOf(req) === '/healthz' || pathOf(req) === '/readyz') },
    customLogLevel(_req, res, err) {
      if (err || res.statusCode >= 500) return 'error';
      return res.statusCode >= 400 ? 'warn' : 'info';
    },
    customSuccessMessage: (req, res) => `${req.method} ${pathOf(req)} ${res.statusCode}`,
    customErrorMessage: (req, res) => `${req.method} ${pathOf(req)} ${res.statusCode}`,
    serializers: {
      req: (req: { id: unknown; method: string; url: string; remoteAddress?: string }) => ({
        id: req.id,
        method: req.method,
        path: pathOf(req),
        remoteAddress: req.remoteAddress,
      }),
      res: (res: { statusCode: number }) => ({ statusCode: res.statusCode }),
    },
  });
}

/** The URL without its query string, which may name documents and namespaces of a tenant. */
function pathOf(req: { url?: string }): string {
  const url = req.url ?? '/';
  const q = url.indexOf('?');
  return q < 0 ? url : url.slice(0, q);
}
