import type { KVExpectation } from '../../storage/kv-object/types.ts';
import type { FetchedObject, KvFetcher, KvFetchOptions } from './kv-fetcher.ts';
import type { PrefetchedReader } from './prefetch.ts';

/**
 * Where a chunk's KV came from: an edge tier over HTTP, a same-host edge's shared memory ('shm'), the engine's hot
 * tier ('engine': no fetch), or the engine's prefill.
 */
export type ChunkTier = 'memory' | 'disk' | 'origin' | 'shm' | 'unknown' | 'engine' | 'computed';

/**
 * One chunk object being downloaded through the fetcher's edge client (rendezvous owner first, failover after) and checked
 * against what the query expects (model, shape, token hash): nothing unverified reaches the engine. Its layers
 * keep arriving while earlier chunks are injected.
 */
export class ChunkFetch {
  /** Resolves once the header is in and matches the expectation. */
  readonly reader: Promise<PrefetchedReader>;
  /** Resolves when the whole object has arrived or the fetch failed; never rejects. */
  readonly done: Promise<void>;

  /** performance.now() when the fetch ended either way. */
  arrivedAt: number | undefined;
  private fetched: FetchedObject | undefined;

  constructor(fetcher: KvFetcher, key: string, expect: KVExpectation, signal: AbortSignal, options: KvFetchOptions = {}) {
    let markDone: () => void = () => {};
    this.done = new Promise<void>(
      (resolve) =>
        (markDone = () => {
          this.arrivedAt ??= performance.now();
          resolve();
        }),
    );
    this.reader = this.start(fetcher, key, expect, signal, options).catch((err: unknown) => {
      markDone();
      throw err;
    });
    this.reader.then(
      (reader) => reader.drained.then(markDone),
      () => {},
    );
  }

  private async start(
    fetcher: KvFetcher,
    key: string,
    expect: KVExpectation,
    signal: AbortSignal,
    options: KvFetchOptions,
  ): Promise<PrefetchedReader> {
    const fetched = await fetcher.open(key, expect, signal, options);
    this.fetched = fetched;
    return fetched.reader;
  }

  /** Where the object came from (read once the fetch is done: a fast-path object may still move to HTTP before). */
  get tier(): ChunkTier {
    const from = this.fetched?.servedFrom;
    return from === undefined || from === 'negative' || from === 'not-cached' ? 'unknown' : from;
  }

  /** The edge that answered. */
  get edge(): string | undefined {
    return this.fetched?.edge;
  }

  /** Bytes received so far. */
  get bytes(): number {
    return this.fetched?.received() ?? 0;
  }
}
