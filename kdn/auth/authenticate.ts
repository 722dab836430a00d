import type { NextFunction, Request, Response } from 'express';
import { KdnError } from '../../common/errors.ts';
import { retryAfterOf, type FailedAuthThrottle } from '../../common/failed-auth-throttle.ts';
import type { ApiKeyRing, Principal } from './api-keys.ts';
import type { RateLimiter } from './rate-limit.ts';

export interface AuthOptions {
  keys: ApiKeyRing;
  limiter: RateLimiter;
  failedAuth: FailedAuthThrottle;
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
    const source = req.socket.remoteAddress ?? '';
    try {
      options.failedAuth.check(source);
    } catch (err) {
      res.setHeader('retry-after', retryAfterOf(err as KdnError) ?? '1');
      throw err;
    }
    const match = /^Bearer\s+(\S+)\s*$/i.exec(req.headers.authorization ?? '');
    const principal = match ? options.keys.lookup(match[1]!) : undefined;
    if (!principal) {
      options.failedAuth.failed(source);
      throw new KdnError('UNAUTHENTICATED', match ? 'the API key is not valid' : 'this request needs an API key', { hint: HINT });
    }
    const waitS = options.limiter.take(principal.keyId);
    if (waitS > 0) {
      res.setHeader('retry-after', String(Math.max(1, Math.ceil(waitS))));
      throw new KdnError('RATE_LIMITED', 'too many requests with this API key', {
        hint: 'wait for Retry-After seconds; the limit is KDN_RATE_LIMIT on the server',
      });
    }
    res.locals.principal = principal;
    next();
  };
}

/** The caller, who must be an operator: server-wide figures and settings are not for tenants. */
export function requireOperator(res: Response): Principal {
  const principal = principalOf(res);
  if (principal.role !== 'operator') {
    throw new KdnError('FORBIDDEN', 'this route is for operators', {
      hint: 'use a key with role operator (KDN_API_KEYS "key=tenant:operator", or "role": "operator" in the keys file); GET /v1/usage shows your own usage',
    });
  }
  return principal;
}

/** The authenticated caller of a request that passed authenticate(). */
export function principalOf(res: Response): Principal {
  const principal = res.locals.principal as Principal | undefined;
  if (!principal) throw new KdnError('UNAUTHENTICATED', 'this request needs an API key', { hint: HINT });
  return principal;
}
