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
  /** Objects this kdn's unfinished ingest jobs found at the origin or are writing, with how many jobs hold each. */
  private readonly held = new Map<string, number>();
  /** Objects being deleted, until their delete is over (the promise never rejects). */
  private readonly deleting = new Map<string, Promise<void>>();

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

  /** Every document `tenant` uploaded, in its own namespaces and in shared ones: what its quota counts. */
  uploadedBy(tenant: string): Manifest[] {
    return [...this.manifests.values()].filter((m) => (m.uploadedBy ?? tenantOf(m.namespace)) === tenant);
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

  /**
   * Removes the manifest and deletes, through `purge`, those of its objects nothing else references (see
   * `collect`); `unused` says which.
   */
  async unpublish<T>(manifest: Manifest, purge: (keys: string[]) => Promise<T>): Promise<{ unused: string[]; purged: T }> {
    await this.origin.delete(manifestKey(manifest.namespace, manifest.id));
    this.manifests.delete(manifest.id);
    this.index.remove(manifest);
    return this.collect(
      manifestObjects(manifest).map((o) => o.key),
      purge,
    );
  }

  /**
   * Deletes, through `purge`, those of `keys` that no known document and no unfinished ingest job (`hold`)
   * references. They are chosen and marked as being deleted in one synchronous step, so a job that holds one of
   * them afterwards waits for the delete and then finds it gone, never present and about to vanish.
   */
  async collect<T>(keys: readonly string[], purge: (keys: string[]) => Promise<T>): Promise<{ unused: string[]; purged: T }> {
    const used = new Set([...this.manifests.values()].flatMap((m) => manifestObjects(m).map((o) => o.key)));
    const unused = [...new Set(keys)].filter((key) => !used.has(key) && !this.held.has(key));
    const purging = purge(unused);
    const over = purging.then(
      () => undefined,
      () => undefined,
    );
    for (const key of unused) this.deleting.set(key, over);
    try {
      return { unused, purged: await purging };
    } finally {
      for (const key of unused) if (this.deleting.get(key) === over) this.deleting.delete(key);
    }
  }

  /**
   * Marks `keys` as used by an unfinished ingest job until the returned release runs, so no delete takes them
   * meanwhile, and resolves once the deletes of any of them already under way are over: what the job then finds at
   * the origin stays there until it publishes its manifest or releases them.
   */
  async hold(keys: readonly string[]): Promise<() => void> {
    const distinct = [...new Set(keys)];
    for (const key of distinct) this.held.set(key, (this.held.get(key) ?? 0) + 1);
    const release = (): void => {
      for (const key of distinct) {
        const count = this.held.get(key)! - 1;
        if (count > 0) this.held.set(key, count);
        else this.held.delete(key);
      }
    };
    await Promise.all(distinct.map((key) => this.deleting.get(key)));
    return release;
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
