import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { KdnError } from './errors.ts';

/**
 * The edge token: kdn (which holds the secret it shares with the edges) signs each edge request, so an edge serves
 * and stores nothing for anyone else. Wire format of the token header (its name, and the paths it is signed for,
 * are in edge/protocol.ts):
 *
 *   <expiry unix seconds>.<nonce: 32 hex>.<hex HMAC-SHA256(secret, signed string)>[.<scope: base64url>]
 *
 * The signed string is, one per line: "kdn-edge-token-2", the method, the request target exactly as sent (path and
 * query string, so a DELETE token does not also cover `?origin=true`), the expiry, the nonce, the hex SHA-256 of
 * the body (PUT: also sent as X-KDN-Content-SHA256, and checked by the edge against the bytes it receives; empty
 * otherwise) and the scope. A scope is a key prefix: the token then also covers every key under it, which is how a
 * warm plan hands `kdn warm` the right to warm one tenant's chunk objects and nothing else.
 *
 * Tokens that authorize a write or a delete are single-use (the edge remembers their nonce until they expire) and
 * may live at most EDGE_WRITE_TOKEN_MAX_LIFETIME_S.
 */

/** Lifetime of the tokens kdn signs per request: long enough to reach an edge, short enough to be useless later. */
export const EDGE_TOKEN_TTL_S = 10;
/** Clock difference tolerated between the signer and the edge. */
export const EDGE_TOKEN_SKEW_S = 5;
/** Tokens claiming a longer life than this are refused, whoever signed them. */
export const EDGE_TOKEN_MAX_LIFETIME_S = 120;
/** Tokens for PUT and DELETE claiming a longer life than this are refused. */
export const EDGE_WRITE_TOKEN_MAX_LIFETIME_S = 30;
/** Shortest secret accepted, so a typo or a placeholder is not used as a key. */
export const MIN_EDGE_SECRET_LENGTH = 16;

const VERSION = 'kdn-edge-token-2';
const TOKEN_PATTERN = /^(\d{1,12})\.([0-9a-f]{32})\.([0-9a-f]{64})(?:\.([A-Za-z0-9_-]{1,1024}))?$/;
const DIGEST_PATTERN = /^[0-9a-f]{64}$/;

/** What a token is asked to cover: one request. */
export interface EdgeTokenRequest {
  method: string;
  /** The request target as sent: path and query string. */
  target: string;
  /** Hex SHA-256 of the body, for PUT. */
  bodyDigest?: string;
}

export interface EdgeTokenClaims extends EdgeTokenRequest {
  expiry: number;
  nonce: string;
  /** A key prefix: the token covers every /kv/ key under it (and those keys in a POST /warm body). */
  scope?: string;
}

/** What a verified token granted. */
export interface VerifiedEdgeToken {
  expiry: number;
  nonce: string;
  scope: string | undefined;
}

/** Something that produces the token for one request. */
export type EdgeSigner = (request: EdgeTokenRequest) => string;

export function bodyDigest(body: Uint8Array | string): string {
  return createHash('sha256').update(body).digest('hex');
}

export function newNonce(): string {
  return randomBytes(16).toString('hex');
}

export function signEdgeToken(secret: string, claims: EdgeTokenClaims): string {
  const scope = claims.scope === undefined ? '' : `.${Buffer.from(claims.scope, 'utf8').toString('base64url')}`;
  return `${claims.expiry}.${claims.nonce}.${mac(secret, claims)}${scope}`;
}

/** A signer that makes a fresh single-request token valid for `ttlS` seconds on every call. */
export function secretSigner(secret: string, ttlS: number = EDGE_TOKEN_TTL_S): EdgeSigner {
  return (request) => signEdgeToken(secret, { ...request, expiry: Math.floor(Date.now() / 1000) + ttlS, nonce: newNonce() });
}

/** Whether a method changes what an edge (or the origin) holds: its tokens are single-use and short-lived. */
export function isWriteMethod(method: string): boolean {
  return method === 'PUT' || method === 'DELETE';
}

/**
 * Checks a token for one request; a scoped token is checked against its scope's signature, and the caller checks
 * the keys against the scope. Missing, malformed and expired tokens are UNAUTHENTICATED (401); a well-formed
 * token whose signature does not match (another target, method, body or secret) is FORBIDDEN (403).
 */
export function verifyEdgeToken(
  secret: string,
  token: string | undefined,
  request: EdgeTokenRequest,
  nowS = Date.now() / 1000,
): VerifiedEdgeToken {
  if (token === undefined || token === '') {
    throw new KdnError('UNAUTHENTICATED', 'this edge needs an X-KDN-Token header signed by kdn', {
      hint: 'requests go through kdn (or an EdgeClient given the edge secret); only /healthz is open',
    });
  }
  const match = TOKEN_PATTERN.exec(token);
  if (!match) {
    throw new KdnError('UNAUTHENTICATED', 'the X-KDN-Token header is malformed', {
      hint: 'tokens look like <expiry>.<32 hex nonce>.<64 hex>[.<scope>]',
    });
  }
  const expiry = Number(match[1]);
  if (expiry + EDGE_TOKEN_SKEW_S < nowS) {
    throw new KdnError('UNAUTHENTICATED', 'the edge token has expired', {
      hint: 'sign a fresh token; check that the clocks of kdn and the edge agree',
    });
  }
  const maxLife = isWriteMethod(request.method) ? EDGE_WRITE_TOKEN_MAX_LIFETIME_S : EDGE_TOKEN_MAX_LIFETIME_S;
  if (expiry - nowS > maxLife + EDGE_TOKEN_SKEW_S) {
    throw new KdnError('UNAUTHENTICATED', `the edge token claims a lifetime longer than ${maxLife} s`, {
      hint: 'sign tokens that expire sooner',
    });
  }
  if (request.bodyDigest !== undefined && !DIGEST_PATTERN.test(request.bodyDigest)) {
    throw new KdnError('UNAUTHENTICATED', 'X-KDN-Content-SHA256 is not 64 lowercase hex digits', {
      hint: 'send the hex SHA-256 of the body the token signs',
    });
  }
  const scope = match[4] === undefined ? undefined : Buffer.from(match[4], 'base64url').toString('utf8');
  const claims: EdgeTokenClaims = { ...request, expiry, nonce: match[2]!, ...(scope === undefined ? {} : { scope }) };
  const expected = Buffer.from(mac(secret, claims), 'hex');
  const given = Buffer.from(match[3]!, 'hex');
  if (!timingSafeEqual(expected, given)) {
    throw new KdnError('FORBIDDEN', 'the edge token does not match this request', {
      hint: 'a token is signed for one method, request target (query string included) and body; check that kdn and the edge share KDN_EDGE_SECRET',
    });
  }
  return { expiry, nonce: claims.nonce, scope };
}

function mac(secret: string, claims: EdgeTokenClaims): string {
  const lines = [VERSION, claims.method, claims.target, String(claims.expiry), claims.nonce, claims.bodyDigest ?? '', claims.scope ?? ''];
  return createHmac('sha256', secret).update(lines.join('\n')).digest('hex');
}
