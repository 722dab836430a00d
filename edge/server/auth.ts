import type { IncomingMessage } from 'node:http';
import { EDGE_TOKEN_SKEW_S, isWriteMethod, verifyEdgeToken } from '../../common/edge-token.ts';
import { KdnError, toKdnError } from '../../common/errors.ts';
import { FailedAuthThrottle } from '../../common/failed-auth-throttle.ts';
import { EDGE_HEADERS, METRICS_ROUTES, type EdgeRoute } from '../protocol.ts';
import type { EdgeConfig } from './config.ts';

/** Nonces of single-use tokens are swept of expired ones after this many new ones. */
const SWEEP_EVERY = 1_024;

/** What a request may touch: `scope` undefined means every chunk key (a token kdn signed for this request). */
export interface EdgeGrant {
  scope: string | undefined;
  /** The body digest the token signed (PUT): the edge checks the bytes it receives against it. */
  bodyDigest: string | undefined;
}

const OPEN: EdgeGrant = { scope: undefined, bodyDigest: undefined };

/**
 * Refuses to run an edge nobody authenticates against unless its operator said so: without a secret, anyone who
 * reaches the port could read, overwrite and purge every cached object.
 */
export function checkEdgeAuthConfig(config: EdgeConfig): void {
  if (config.secret === undefined && !config.insecureNoAuth) {
    throw new KdnError('INVALID_ARGUMENT', 'the edge has no secret to check request tokens with, so it will not start', {
      hint: 'give it the secret kdn uses (--edge-secret or KDN_EDGE_SECRET); on a trusted test network only, pass --insecure-no-auth',
    });
  }
}

/**
 * Checks the X-KDN-Token of each request (common/edge-token.ts): the token must sign this method, this request
 * target with its query string, and for PUT the digest of the body; write and delete tokens are accepted once.
 * Source addresses that keep failing are answered 429 instead of 401/403.
 */
export class EdgeAuth {
  /** Nonce of each single-use token seen, with its expiry. */
  private readonly used = new Map<string, number>();
  private sinceSweep = 0;
  private readonly throttle: FailedAuthThrottle;

  constructor(private readonly config: EdgeConfig) {
    this.throttle = new FailedAuthThrottle(config.failedAuthLimit);
  }

  /**
   * Throws UNAUTHENTICATED / FORBIDDEN / RATE_LIMITED, or returns what the request may touch. Passes everything when
   * the edge runs without auth, and /stats and /metrics when they are public.
   */
  authorize(req: IncomingMessage, method: string, route: EdgeRoute): EdgeGrant {
    if (this.config.secret === undefined) return OPEN;
    if (this.config.publicMetrics && METRICS_ROUTES.has(route)) return OPEN;
    try {
      return this.verify(req, method);
    } catch (err) {
      // Checked after the token, not before: a token cannot be guessed, so a valid one always passes, and an
      // attacker sharing kdn's address (a NAT, the same host) cannot lock kdn out by failing on purpose.
      const source = req.socket.remoteAddress ?? '';
      this.throttle.check(source);
      this.throttle.failed(source);
      throw toKdnError(err);
    }
  }

  private verify(req: IncomingMessage, method: string): EdgeGrant {
    const digest = single(req.headers[EDGE_HEADERS.bodyDigest]);
    if (method === 'PUT' && digest === undefined) {
      throw new KdnError('UNAUTHENTICATED', 'a PUT needs an X-KDN-Content-SHA256 header, which its token signs', {
        hint: 'send the hex SHA-256 of the body (the edge client does)',
      });
    }
    const bodyDigest = method === 'PUT' ? digest : undefined;
    const granted = verifyEdgeToken(this.config.secret!, single(req.headers[EDGE_HEADERS.token]), {
      method,
      target: req.url ?? '/',
      ...(bodyDigest === undefined ? {} : { bodyDigest }),
    });
    if (isWriteMethod(method)) this.spend(granted.nonce, granted.expiry);
    return { scope: granted.scope, bodyDigest };
  }

  /** Accepts a write or delete token once: a replayed one is FORBIDDEN until it expires anyway. */
  private spend(nonce: string, expiry: number): void {
    if (this.used.has(nonce)) {
      throw new KdnError('FORBIDDEN', 'this edge token was already used', {
        hint: 'tokens for PUT and DELETE are single-use: sign a fresh one per request',
      });
    }
    this.used.set(nonce, expiry);
    if (++this.sinceSweep >= SWEEP_EVERY) this.sweep();
  }

  private sweep(): void {
    this.sinceSweep = 0;
    // Past expiry plus skew the token is refused as expired, so its nonce need not be remembered.
    const cutoff = Date.now() / 1000 - EDGE_TOKEN_SKEW_S - 1;
    for (const [nonce, expiry] of this.used) if (expiry < cutoff) this.used.delete(nonce);
  }
}

/** Whether a grant covers `key`: an unscoped grant covers every key, a scoped one the keys under its prefix. */
export function grantCovers(grant: EdgeGrant, key: string): boolean {
  return grant.scope === undefined || key.startsWith(grant.scope);
}

function single(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[0] : value;
}
