import { randomBytes } from 'node:crypto';

/**
 * Credentials every fault test uses: kdn reads API keys from KDN_API_KEYS ("key=tenant,..."), kdn and its edges share
 * KDN_EDGE_SECRET. Every process gets both and every request carries the key, so the faults are tested with
 * authentication on, as a deployment runs.
 */
export const API_KEY = 'faults-key-0123456789abcdef';
export const TENANT = 'faults';

const EDGE_SECRET = randomBytes(24).toString('hex');

/** Environment for any kdn or edge process a fault test starts. */
export function authEnv(): NodeJS.ProcessEnv {
  // Operator: the fault tests read kdn's /metrics.
  return { KDN_API_KEYS: `${API_KEY}=${TENANT}:operator`, KDN_EDGE_SECRET: EDGE_SECRET };
}

export function authHeaders(): Record<string, string> {
  return { authorization: `Bearer ${API_KEY}` };
}
