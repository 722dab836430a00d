import type { NextFunction, Request, Response } from 'express';
import { KdnError } from '../../common/errors.ts';
import type { ApiKeyRing, Principal } from './api-keys.ts';
import type { RateLimiter } from './rate-limit.ts';

export interface AuthOptions {
  keys: ApiKeyRing;
  limiter: RateLimiter;
  /** Leave GET /metrics open (KDN_METRICS_PUBLIC=true). */
  metricsPublic: boolean;
}

const HINT =
  'send "Authorization: Bearer <key>" (kdn CLI: --api-key or KDN_API_KEY); keys are configured with KDN_API_KEYS or ' +
  '--api-keys-file, and without them kdn serve generates one into <data-dir>/api-key';

/**
 * Express middleware: every request but GET /healthz and /readyz (and GET /metrics when public) needs a configured API key,
 * and each key is held to its request rate. The caller's tenant is then in res.locals (see principalOf).
 */
export function authenticate(options: AuthOptions) {
  return (req: Request, res: Response, next: NextFunction): void => {
    if (req.method === 'GET' && (req.path === '/healthz' || req.path === '/readyz' || (options.metricsPublic && req.path === '/metrics'))) {
      next();
      return;
    }
    const match = /^Bearer\s+(\S+)\s*$/i.exec(req.headers.authorization ?? '');
    if (!match) throw new KdnError('UNAUTHENTICATED', 'this request needs an API key', { hint: HINT });
    const principal = options.keys.lookup(match[1]!);
    if (!principal) throw new KdnError('UNAUTHENTICATED', 'the API key is not valid', { hint: HINT });
    const waitS = options.limiter.take(principal.keyId);
    if (waitS > 0) {
      res.setHeader('retry-after', String(Math.max(1, Math.ceil(waitS))));
      throw new KdnError('RATE_LIMITED', 'too many requests with this API key', { hint: 'wait for Retry-After seconds; the limit is KDN_RATE_LIMIT on the server' });
    }
    res.locals.principal = principal;
    next();
  };
}

/** The authenticated caller of a request that passed authenticate(). */
export function principalOf(res: Response): Principal {
  const principal = res.locals.principal as Principal | undefined;
  if (!principal) throw new KdnError('UNAUTHENTICATED', 'this request needs an API key', { hint: HINT });
  return principal;
}
