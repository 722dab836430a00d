/**
 * Transform-codec tables on the query path. A chunk object of the transform codec names its table by hash only;
 * before such an object is injected, the table is fetched (once per process), verified against that hash, and
 * registered where the object's bytes go: this thread's registry, the fetch threads and the engine. A table that
 * cannot be had fails the object's fetch, so its chunk is computed instead, as for any object that cannot be fetched.
 */
import { KdnError } from '../../common/errors.ts';
import { parseTransformTable } from '../../storage/kv-object/codecs/transform-table.ts';
import { transformTables } from '../../storage/kv-object/codecs/transform-tables.ts';
import type { KVHeader } from '../../storage/kv-object/types.ts';
import type { Engine } from '../../engine-adapter/types.ts';
import type { FetchedObject, KvFetcher } from './kv-fetcher.ts';

/**
 * Reads a table's serialized bytes by its hash (from the origin). Not tied to one query's signal: the load is shared
 * by every query that waits for it.
 */
export type TableSource = (hash: string) => Promise<Uint8Array>;

export class TransformTableLoader {
  /** Tables loaded or being loaded, by hash; a failed load is forgotten, so a later query tries again. */
  private readonly loads = new Map<string, Promise<void>>();

  constructor(
    private readonly source: TableSource,
    private readonly engine: Pick<Engine, 'useTransformTable'>,
    private readonly fetcher: Pick<KvFetcher, 'useTransformTable'>,
  ) {}

  /** Resolves once objects naming `header`'s table can be injected (at once for codecs without one). */
  ready(header: KVHeader): Promise<void> {
    const hash = header.codec.name === 'transform' ? header.codec.table : undefined;
    if (hash === undefined) return Promise.resolve();
    let load = this.loads.get(hash);
    if (load === undefined) {
      load = this.load(hash);
      this.loads.set(hash, load);
      load.catch(() => this.loads.delete(hash));
    }
    return load;
  }

  private async load(hash: string): Promise<void> {
    const bytes = await this.source(hash);
    const table = parseTransformTable(bytes);
    if (table.hash !== hash) {
      throw new KdnError('KV_CORRUPT', `the object stored as transform table ${hash.slice(0, 16)}... hashes to ${table.hash.slice(0, 16)}...`, {
        hint: 'store the table again under its own hash',
      });
    }
    transformTables.register(table);
    this.fetcher.useTransformTable(table.bytes);
    await this.engine.useTransformTable(table);
  }
}

/**
 * `fetcher` whose objects resolve only once their transform table is ready; if it cannot be, the object's download
 * is stopped and its open() fails with the table's error.
 */
export function withTransformTables(fetcher: KvFetcher, tables: TransformTableLoader): KvFetcher {
  return {
    threads: fetcher.threads,
    async open(key, expect, signal): Promise<FetchedObject> {
      // The download listens on its own signal, which the caller's ends too, so a missing table can stop it alone.
      const own = new AbortController();
      signal.addEventListener('abort', () => own.abort(signal.reason), { once: true });
      const fetched = await fetcher.open(key, expect, own.signal);
      try {
        await tables.ready(fetched.reader.header);
      } catch (err) {
        own.abort(err);
        throw err;
      }
      return fetched;
    },
    useTransformTable: (bytes) => fetcher.useTransformTable(bytes),
    close: () => fetcher.close(),
  };
}
