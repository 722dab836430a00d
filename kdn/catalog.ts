import type { Logger } from '../common/log.ts';
import { KdnError, isKdnError } from '../common/errors.ts';
import type { ObjectStore } from '../storage/object-store.ts';
import { publicName, tenantOf } from './auth/tenancy.ts';
import { MANIFEST_PREFIX, manifestKey } from './keys.ts';
import { ManifestSchema, manifestObjects, type Manifest } from './manifest.ts';
import { ChunkIndex } from './retrieval/chunk-index.ts';

/** Largest manifest read back from the origin; anything bigger is not ours. */
const MAX_MANIFEST_BYTES = 64 * 2 ** 20;

/**
 * The documents this kdn knows: every manifest at the origin, held in memory with the retrieval index built from
 * them. The origin is the source of truth; a lookup that misses here reads the origin, so documents another kdn
 * uploaded become visible. Namespaces here are tenant-scoped ("<tenant>/<namespace>", see auth/tenancy.ts).
 */
export class Catalog {
  readonly index = new ChunkIndex();
  private readonly manifests = new Map<string, Manifest>();

  constructor(
    private readonly origin: ObjectStore,
    private readonly log: Logger,
  ) {}

  /** Reads every manifest at the origin; unreadable ones are logged and skipped. */
  async load(): Promise<number> {
    for await (const info of this.origin.list(MANIFEST_PREFIX)) {
      if (!info.key.endsWith('.json')) continue;
      try {
        this.remember(await this.read(info.key));
      } catch (err) {
        this.log.warn({ key: info.key, err }, 'skipping unreadable manifest');
      }
    }
    return this.manifests.size;
  }

  /** Every known document. */
  all(): Manifest[] {
    return [...this.manifests.values()];
  }

  /** Every document of `tenant`'s own namespaces (shared namespaces excluded). */
  ownedBy(tenant: string): Manifest[] {
    return [...this.manifests.values()].filter((m) => tenantOf(m.namespace) === tenant);
  }

  list(namespace: string): Manifest[] {
    return [...this.manifests.values()]
      .filter((m) => m.namespace === namespace)
      .sort((a, b) => a.createdAt.localeCompare(b.createdAt) || a.title.localeCompare(b.title));
  }

  /** Finds a document of `namespace` by id, or by title when no id matches; NOT_FOUND otherwise. */
  async resolve(namespace: string, idOrTitle: string): Promise<Manifest> {
    const found = await this.find(namespace, idOrTitle);
    if (found) return found;
    throw new KdnError('NOT_FOUND', `no document "${idOrTitle}" in namespace "${publicName(namespace)}"`, {
      hint: 'list documents with `kdn docs list` (GET /v1/documents)',
    });
  }

  async find(namespace: string, idOrTitle: string): Promise<Manifest | undefined> {
    const byId = this.manifests.get(idOrTitle);
    if (byId && byId.namespace === namespace) return byId;
    const byTitle = this.list(namespace).filter((m) => m.title === idOrTitle);
    if (byTitle.length > 1) {
      throw new KdnError('CONFLICT', `${byTitle.length} documents are titled "${idOrTitle}"`, { hint: 'name the document by id' });
    }
    if (byTitle[0]) return byTitle[0];
    if (!/^[0-9a-f]{32}$/.test(idOrTitle)) return undefined;
    try {
      const manifest = await this.read(manifestKey(namespace, idOrTitle));
      this.remember(manifest);
      return manifest;
    } catch (err) {
      if (isKdnError(err, 'NOT_FOUND')) return undefined;
      throw err;
    }
  }

  /** Writes a manifest to the origin (the last step of an ingest) and indexes it. */
  async publish(manifest: Manifest): Promise<void> {
    await this.origin.put(manifestKey(manifest.namespace, manifest.id), Buffer.from(JSON.stringify(manifest)));
    this.remember(manifest);
  }

  /** Removes the manifest; returns the objects no other known document references. */
  async unpublish(manifest: Manifest): Promise<string[]> {
    await this.origin.delete(manifestKey(manifest.namespace, manifest.id));
    this.manifests.delete(manifest.id);
    this.index.remove(manifest);
    const stillUsed = new Set([...this.manifests.values()].flatMap((m) => manifestObjects(m).map((o) => o.key)));
    return manifestObjects(manifest)
      .map((o) => o.key)
      .filter((key) => !stillUsed.has(key));
  }

  private remember(manifest: Manifest): void {
    this.manifests.set(manifest.id, manifest);
    this.index.add(manifest);
  }

  private async read(key: string): Promise<Manifest> {
    const info = await this.origin.head(key);
    if (!info) throw new KdnError('NOT_FOUND', `no manifest ${key}`);
    if (info.size > MAX_MANIFEST_BYTES) throw new KdnError('STORAGE_ERROR', `manifest ${key} is ${info.size} bytes`);
    let json: unknown;
    try {
      json = JSON.parse((await this.origin.get(key)).toString('utf8'));
    } catch (err) {
      throw new KdnError('STORAGE_ERROR', `manifest ${key} is not JSON`, { cause: err });
    }
    const parsed = ManifestSchema.safeParse(json);
    if (!parsed.success) throw new KdnError('STORAGE_ERROR', `manifest ${key} is malformed: ${parsed.error.message}`);
    return parsed.data;
  }
}
