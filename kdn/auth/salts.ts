import { createHmac, randomBytes } from 'node:crypto';
import { KdnError, isKdnError } from '../../common/errors.ts';
import type { ObjectStore } from '../../storage/object-store.ts';
import { tenantOf } from './tenancy.ts';

/**
 * The server secret chunk-key salts derive from. It lives at the origin, next to the objects it salts, so every kdn
 * on one origin makes the same keys; edges never serve it (it is not a valid KV object).
 */
export const SALT_SECRET_KEY = 'secrets/chunk-salt.key';

const SECRET_PATTERN = /^[0-9a-f]{64}$/;

/**
 * Chunk KV keys are salted per tenant (HMAC of the tenant id with the secret), so the same text uploaded by two
 * tenants makes two objects, and a cache hit, or its timing, tells no tenant what another holds. Shared namespaces
 * use one fixed shared salt.
 */
export class ChunkSalts {
  private readonly byTenant = new Map<string, string>();
  private readonly sharedSalt: string;

  constructor(private readonly secret: string) {
    this.sharedSalt = this.derive('shared\0');
  }

  /** The salt for a scoped namespace (see tenancy.ts). */
  saltFor(scopedNamespace: string): string {
    const tenant = tenantOf(scopedNamespace);
    if (tenant === undefined) return this.sharedSalt;
    let salt = this.byTenant.get(tenant);
    if (salt === undefined) {
      salt = this.derive(`tenant\0${tenant}`);
      this.byTenant.set(tenant, salt);
    }
    return salt;
  }

  private derive(label: string): string {
    return createHmac('sha256', this.secret).update(label).digest('hex');
  }
}

/**
 * Reads the salt secret from the origin, creating it on first start. Two kdn starting at once on a fresh origin may
 * both write; both then read back whichever write landed last, so they agree.
 */
export async function loadSaltSecret(origin: ObjectStore): Promise<string> {
  const existing = await readSecret(origin);
  if (existing !== undefined) return existing;
  await origin.put(SALT_SECRET_KEY, Buffer.from(randomBytes(32).toString('hex')));
  const written = await readSecret(origin);
  if (written === undefined)
    throw new KdnError('STORAGE_ERROR', `the origin did not keep ${SALT_SECRET_KEY}`, { hint: 'check that the origin is writable' });
  return written;
}

async function readSecret(origin: ObjectStore): Promise<string | undefined> {
  let text: string;
  try {
    text = (await origin.get(SALT_SECRET_KEY)).toString('utf8').trim();
  } catch (err) {
    if (isKdnError(err, 'NOT_FOUND')) return undefined;
    throw err;
  }
  if (!SECRET_PATTERN.test(text)) {
    throw new KdnError('STORAGE_ERROR', `${SALT_SECRET_KEY} at the origin is not 64 hex digits`, {
      hint: 'restore it from a backup: a new secret would make every stored chunk key unreachable for re-uploads',
    });
  }
  return text;
}
