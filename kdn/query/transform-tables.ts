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
  private readonly loaded = new Set<string>();

  constructor(
    private readonly source: TableSource,
    private readonly engine: Pick<Engine, 'useTransformTable'>,
    private readonly fetcher: Pick<KvFetcher, 'useTransformTable'>,
  ) {}

  /** Whether objects naming `hash` can be received and injected now. */
  has(hash: string): boolean {
    return this.loaded.has(hash);
  }

  /** Resolves once the table is registered here, in the fetch threads and in the engine. */
  load(hash: string): Promise<void> {
    let load = this.loads.get(hash);
    if (load === undefined) {
      load = this.fetchAndRegister(hash).then(() => void this.loaded.add(hash));
      this.loads.set(hash, load);
      load.catch(() => this.loads.delete(hash));
    }
    return load;
  }

  private async fetchAndRegister(hash: string): Promise<void> {
    const bytes = await this.source(hash);
    const table = parseTransformTable(bytes);
    if (table.hash !== hash) {
      const [named, actual] = [hash.slice(0, 16), table.hash.slice(0, 16)];
      throw new KdnError('KV_CORRUPT', `the object stored as transform table ${named}... hashes to ${actual}...`, {
        hint: 'store the table again under its own hash',
      });
    }
    transformTables.register(table);
    this.fetcher.useTransformTable(table.bytes);
    await this.engine.useTransformTable(table);
  }
}

/** The table a header names, if its codec has one. */
function tableOf(header: KVHeader): string | undefined {
  return header.codec.name === 'transform' ? header.codec.table : undefined;
}

/**
 * `fetcher` whose objects resolve only once their transform table is ready (the download goes on meanwhile: the
 * receiving threads verify layers by checksum without the table). If the table cannot be loaded, the download is
 * stopped and open() fails with the table's error.
 */
export function withTransformTables(fetcher: KvFetcher, tables: TransformTableLoader): KvFetcher {
  return {
    threads: fetcher.threads,
    async open(key, expect, signal): Promise<FetchedObject> {
      const own = new AbortController();
      signal.addEventListener('abort', () => own.abort(signal.reason), { once: true });
      const fetched = await fetcher.open(key, expect, own.signal);
      const hash = tableOf(fetched.reader.header);
      if (hash === undefined || tables.has(hash)) return fetched;
      try {
        await tables.load(hash);
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
