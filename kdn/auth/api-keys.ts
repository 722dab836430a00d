import { createHash, randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { z } from 'zod';
import { KdnError } from '../../common/errors.ts';

/** Tenant ids become one segment of object keys (manifests/<tenant>/<namespace>/...). */
export const TenantSchema = z
  .string()
  .regex(
    /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/,
    'a tenant id is 1-63 characters of A-Z, a-z, 0-9, ".", "_", "-", starting with a letter or digit',
  );

const KeySchema = z.string().regex(/^[\x21-\x7e]{1,256}$/, 'an API key is 1-256 printable characters without spaces');

/** Operators also read the whole server's /metrics and /v1/status; tenants see only their own. */
const RoleSchema = z.enum(['tenant', 'operator']);
export type Role = z.infer<typeof RoleSchema>;

const KeysFileSchema = z
  .object({ keys: z.array(z.object({ key: KeySchema, tenant: TenantSchema, role: RoleSchema.optional() }).strict()).min(1) })
  .strict();

/** Tenant given to the key `kdn serve` generates when none is configured. */
export const DEFAULT_TENANT = 'default';

/** Keys shorter than this are accepted (tests, demos) but logged as weak. */
export const WEAK_KEY_LENGTH = 16;

export interface ApiKeyEntry {
  key: string;
  tenant: string;
  /** Default "tenant". */
  role?: Role;
}

/** Who made a request. */
export interface Principal {
  tenant: string;
  role: Role;
  /** sha256 of the key: names the key in rate limiting and logs without revealing it. */
  keyId: string;
}

/**
 * The configured API keys. Lookups hash the presented key and find the hash, so the time taken does not depend on
 * how much of a stored key a guess matches.
 */
export class ApiKeyRing {
  private readonly byHash = new Map<string, { tenant: string; role: Role }>();

  constructor(entries: readonly ApiKeyEntry[]) {
    for (const { key, tenant, role = 'tenant' } of entries) {
      const id = keyId(key);
      const known = this.byHash.get(id);
      if (known !== undefined && (known.tenant !== tenant || known.role !== role)) {
        throw new KdnError('INVALID_ARGUMENT', `one API key is configured twice ("${known.tenant}" and "${tenant}")`, {
          hint: 'give each key one tenant and one role',
        });
      }
      this.byHash.set(id, { tenant, role });
    }
  }

  get size(): number {
    return this.byHash.size;
  }

  lookup(key: string): Principal | undefined {
    const id = keyId(key);
    const entry = this.byHash.get(id);
    return entry === undefined ? undefined : { ...entry, keyId: id };
  }
}

/** Parses KDN_API_KEYS: "key1=tenantA,key2=tenantB:operator" (a ":operator" suffix gives the key that role). */
export function parseApiKeys(text: string): ApiKeyEntry[] {
  const items = text
    .split(',')
    .map((item) => item.trim())
    .filter((item) => item !== '');
  return items.map((item, index) => {
    const at = item.lastIndexOf('=');
    const [tenant, role, ...extra] = item
      .slice(at + 1)
      .trim()
      .split(':');
    const parsed = z
      .object({ key: KeySchema, tenant: TenantSchema, role: RoleSchema.optional() })
      .safeParse({ key: item.slice(0, Math.max(at, 0)).trim(), tenant, ...(role === undefined ? {} : { role }) });
    if (at < 0 || extra.length > 0 || !parsed.success) {
      throw new KdnError(
        'INVALID_ARGUMENT',
        `KDN_API_KEYS entry ${index + 1} is not key=tenant[:role]${parsed.success ? '' : `: ${parsed.error.issues[0]!.message}`}`,
        {
          hint: 'write KDN_API_KEYS="key1=tenantA,key2=tenantB,key3=ops:operator"',
        },
      );
    }
    return parsed.data;
  });
}

/** Reads an --api-keys-file: {"keys": [{"key": "...", "tenant": "..."}]}. */
export async function readApiKeysFile(path: string): Promise<ApiKeyEntry[]> {
  let json: unknown;
  try {
    json = JSON.parse(await readFile(path, 'utf8'));
  } catch (err) {
    throw new KdnError('INVALID_ARGUMENT', `cannot read the API keys file ${path}: ${(err as Error).message}`, {
      hint: 'the file is JSON: {"keys": [{"key": "...", "tenant": "..."}]}',
      cause: err,
    });
  }
  const parsed = KeysFileSchema.safeParse(json);
  if (!parsed.success) {
    const problem = parsed.error.issues[0]!;
    throw new KdnError(
      'INVALID_ARGUMENT',
      `the API keys file ${path} is invalid at ${problem.path.join('.') || 'the top'}: ${problem.message}`,
      {
        hint: 'the file is JSON: {"keys": [{"key": "...", "tenant": "..."}]}',
      },
    );
  }
  return parsed.data.keys;
}

/** A new random API key (256 bits, URL-safe). */
export function generateApiKey(): string {
  return `kdn_${randomBytes(32).toString('base64url')}`;
}

function keyId(key: string): string {
  return createHash('sha256').update(key).digest('hex');
}
