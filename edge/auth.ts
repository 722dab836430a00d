import type { IncomingMessage } from 'node:http';
import { EDGE_TOKEN_HEADER, verifyEdgeToken } from '../common/edge-token.ts';
import { KdnError } from '../common/errors.ts';
import type { EdgeConfig } from './config.ts';

/** Routes anyone may read when the edge runs with --public-metrics. */
const METRICS_PATHS = new Set(['/stats', '/metrics']);

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
 * Checks the X-KDN-Token of a request for `method` on `target` (the object key for /kv/<key>, else the path).
 * Throws UNAUTHENTICATED / FORBIDDEN; passes when the edge runs without auth, and for /stats and /metrics when
 * they are public.
 */
export function authorizeEdgeRequest(config: EdgeConfig, req: IncomingMessage, method: string, target: string): void {
  if (config.secret === undefined) return;
  if (config.publicMetrics && METRICS_PATHS.has(target)) return;
  const token = req.headers[EDGE_TOKEN_HEADER];
  verifyEdgeToken(config.secret, Array.isArray(token) ? token[0] : token, method, target);
}
