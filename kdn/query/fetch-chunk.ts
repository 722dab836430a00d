import type { EdgeClient } from '../../edge/client.ts';
import type { ResumableBody } from '../../edge/resumable-body.ts';
import { readKVObject } from '../../storage/kv-object/index.ts';
import type { KVExpectation } from '../../storage/kv-object/types.ts';
import { prefetchLayers, type PrefetchedReader } from './prefetch.ts';

/** Where a chunk's KV came from: an edge tier, or computed by the engine because no object could be used. */
export type ChunkTier = 'memory' | 'disk' | 'origin' | 'unknown' | 'computed';

/**
 * One chunk object being downloaded through the edge client (rendezvous owner first, failover after) and checked
 * against what the query expects (model, shape, token hash): nothing unverified reaches the engine. Its layers
 * keep arriving while earlier chunks are injected.
 */
export class ChunkFetch {
  /** Resolves once the header is in and matches the expectation. */
  readonly reader: Promise<PrefetchedReader>;
  /** Resolves when the whole object has arrived or the fetch failed; never rejects. */
  readonly done: Promise<void>;
  tier: ChunkTier = 'unknown';
  edge: string | undefined;
  private body: ResumableBody | undefined;

  constructor(edges: EdgeClient, key: string, expect: KVExpectation, signal: AbortSignal) {
    let markDone: () => void = () => {};
    this.done = new Promise<void>((resolve) => (markDone = resolve));
    this.reader = this.start(edges, key, expect, signal).catch((err: unknown) => {
      markDone();
      throw err;
    });
    this.reader.then((reader) => reader.drained.then(markDone), () => {});
  }

  private async start(edges: EdgeClient, key: string, expect: KVExpectation, signal: AbortSignal): Promise<PrefetchedReader> {
    const got = await edges.get(key, { signal });
    this.tier = got.servedFrom === 'negative' || got.servedFrom === 'not-cached' ? 'unknown' : got.servedFrom;
    this.edge = got.edge;
    this.body = got.body;
    return prefetchLayers(await readKVObject(got.body, expect));
  }

  /** Bytes received so far. */
  get bytes(): number {
    return this.body?.received ?? 0;
  }
}
