import { FailedAuthThrottle } from '../../common/failed-auth-throttle.ts';
import type { Logger } from '../../common/log.ts';
import type { ObjectStore } from '../../storage/object-store.ts';
import type { KdnConfig } from '../config.ts';
import {
  ApiKeyRing,
  DEFAULT_TENANT,
  WEAK_KEY_LENGTH,
  generateApiKey,
  parseApiKeys,
  readApiKeysFile,
  type ApiKeyEntry,
} from './api-keys.ts';
import { localKeyPath, readLocalKey, writeLocalKey } from './local-key.ts';
import { RateLimiter } from './rate-limit.ts';
import { ChunkSalts, loadSaltSecret } from './salts.ts';
import { Tenancy, parseSharedNamespaces } from './tenancy.ts';

/** Everything kdn needs to decide who a request is from and what it may touch. */
export interface Access {
  keys: ApiKeyRing;
  limiter: RateLimiter;
  /** Per source address: guessing keys is answered 429 after a few misses. */
  failedAuth: FailedAuthThrottle;
  tenancy: Tenancy;
  salts: ChunkSalts;
  metricsPublic: boolean;
  /** Set when no keys were configured: the key kdn uses for tenant "default", the file it is in, and whether it was made just now. */
  generated?: { key: string; path: string; fresh: boolean };
}

/**
 * Builds the access rules from the configuration. With no keys configured, one key for tenant "default" is used:
 * the one in <dataDir>/api-key when a previous run left it there, else a new one written to that file.
 */
export async function loadAccess(config: KdnConfig, origin: ObjectStore, log: Logger): Promise<Access> {
  const entries: ApiKeyEntry[] = [
    ...(config.apiKeys ? parseApiKeys(config.apiKeys) : []),
    ...(config.apiKeysFile ? await readApiKeysFile(config.apiKeysFile) : []),
  ];
  let generated: Access['generated'];
  if (entries.length === 0) {
    const path = localKeyPath(config.dataDir);
    let key = readLocalKey(path);
    const fresh = key === undefined;
    if (key === undefined) {
      key = generateApiKey();
      await writeLocalKey(path, key);
    }
    // The one key of a server nobody configured belongs to whoever runs it.
    entries.push({ key, tenant: DEFAULT_TENANT, role: 'operator' });
    generated = { key, path, fresh };
  }
  const weak = entries.filter((e) => e.key.length < WEAK_KEY_LENGTH).map((e) => e.tenant);
  if (weak.length > 0) log.warn({ tenants: weak }, `API keys shorter than ${WEAK_KEY_LENGTH} characters are easy to guess`);
  const tenancy = new Tenancy(parseSharedNamespaces(config.sharedNamespaces));
  return {
    keys: new ApiKeyRing(entries),
    limiter: new RateLimiter(config.rateLimit),
    failedAuth: new FailedAuthThrottle(config.failedAuthLimit),
    tenancy,
    salts: new ChunkSalts(await loadSaltSecret(origin)),
    metricsPublic: config.metricsPublic,
    ...(generated ? { generated } : {}),
  };
}
