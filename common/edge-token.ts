import { createHmac, timingSafeEqual } from 'node:crypto';
import { KdnError } from './errors.ts';

/**
 * The edge token: kdn (which holds the secret it shares with the edges) signs each edge request, so an edge serves
 * and stores nothing for anyone else. Wire format, header `X-KDN-Token`:
 *
 *   <expiry unix seconds>.<hex HMAC-SHA256(secret, method + "\n" + target + "\n" + expiry)>
 *
 * `target` is the object key for /kv/<key> (so a token is good for one method on one key), or the path for the
 * other routes ("/warm", "/stats", "/metrics"). The query string is not signed: a DELETE token for a key also
 * covers `?origin=true`.
 */

export const EDGE_TOKEN_HEADER = 'x-kdn-token';
/** Lifetime of the tokens kdn signs per request. */
export const EDGE_TOKEN_TTL_S = 60;
/** Clock difference tolerated between the signer and the edge. */
export const EDGE_TOKEN_SKEW_S = 30;
/** Tokens claiming a longer life than this are refused, whoever signed them. */
export const EDGE_TOKEN_MAX_LIFETIME_S = 3_600;
/** Shortest secret accepted, so a typo or a placeholder is not used as a key. */
export const MIN_EDGE_SECRET_LENGTH = 16;

/** Something that produces the token for one request. */
export type EdgeSigner = (method: string, target: string) => string;

/**
 * What a token signs for a request path: the (percent-decoded) key of /kv/<key>, else the path, without the query
 * string either way.
 */
export function edgeTokenTarget(path: string): string {
  const queryAt = path.indexOf('?');
  const bare = queryAt < 0 ? path : path.slice(0, queryAt);
  if (!bare.startsWith('/kv/')) return bare;
  try {
    return decodeURIComponent(bare.slice(4));
  } catch {
    return bare.slice(4);
  }
}

export function signEdgeToken(secret: string, method: string, target: string, expiry: number): string {
  return `${expiry}.${mac(secret, method, target, expiry)}`;
}

/** A signer that makes a fresh token valid for `ttlS` seconds on every call. */
export function secretSigner(secret: string, ttlS: number = EDGE_TOKEN_TTL_S): EdgeSigner {
  return (method, target) => signEdgeToken(secret, method, target, Math.floor(Date.now() / 1000) + ttlS);
}

/**
 * Checks a token for `method` on `target`. Missing, malformed and expired tokens are UNAUTHENTICATED (401); a
 * well-formed token whose signature does not match (another key, another method, another secret) is FORBIDDEN (403).
 */
export function verifyEdgeToken(secret: string, token: string | undefined, method: string, target: string, nowS = Date.now() / 1000): void {
  if (token === undefined || token === '') {
    throw new KdnError('UNAUTHENTICATED', 'this edge needs an X-KDN-Token header signed by kdn', {
      hint: 'requests go through kdn (or an EdgeClient given the edge secret); only /healthz is open',
    });
  }
  const match = /^(\d{1,12})\.([0-9a-f]{64})$/.exec(token);
  if (!match) {
    throw new KdnError('UNAUTHENTICATED', 'the X-KDN-Token header is malformed', { hint: 'tokens look like <expiry-unix-seconds>.<64 hex digits>' });
  }
  const expiry = Number(match[1]);
  if (expiry + EDGE_TOKEN_SKEW_S < nowS) {
    throw new KdnError('UNAUTHENTICATED', 'the edge token has expired', { hint: 'sign a fresh token; check that the clocks of kdn and the edge agree' });
  }
  if (expiry - nowS > EDGE_TOKEN_MAX_LIFETIME_S + EDGE_TOKEN_SKEW_S) {
    throw new KdnError('UNAUTHENTICATED', 'the edge token claims a lifetime longer than an hour', { hint: 'sign tokens that expire sooner' });
  }
  const expected = Buffer.from(mac(secret, method, target, expiry), 'hex');
  const given = Buffer.from(match[2]!, 'hex');
  if (!timingSafeEqual(expected, given)) {
    throw new KdnError('FORBIDDEN', 'the edge token does not match this request', {
      hint: 'a token is signed for one method and one key (or path); check that kdn and the edge share KDN_EDGE_SECRET',
    });
  }
}

function mac(secret: string, method: string, target: string, expiry: number): string {
  return createHmac('sha256', secret).update(`${method}\n${target}\n${expiry}`).digest('hex');
}
