/**
 * How a query's chunk objects are downloaded and verified before injection: on the event loop through the edge
 * client (inThreadFetcher), or spread over worker threads each running its own edge client (KvFetchPool), which
 * multiplies how many bytes per second a host can receive and hash. Either way every layer is verified before the
 * engine sees it.
 */
import { availableParallelism } from 'node:os';
import type { ServedFrom } from '../../edge/protocol.ts';
import type { EdgeClient } from '../../edge/client/client.ts';
import { readKVObject } from '../../storage/kv-object/index.ts';
import type { KVExpectation } from '../../storage/kv-object/types.ts';
import { LayerQueue, prefetchLayers, type PrefetchedReader } from './prefetch.ts';
import { ShmSource, type ShmObject } from './shm-source.ts';

/** Which edge tier answered over HTTP, or 'shm': read from a same-host edge's shared-memory folder. */
export type FetchedFrom = ServedFrom | 'shm';

export interface FetchedObject {
  /** The verified header; layers stream in (and are kept until injected). */
  reader: PrefetchedReader;
  /** Changes at most once, before any layer: a shared-memory file that failed verification continues over HTTP. */
  servedFrom: FetchedFrom;
  /** The edge that answered. */
  edge: string;
  /** Bytes received so far. */
  received(): number;
}

export interface KvFetchOptions {
  /**
   * The object is injected together with the others opened so (layer l of every chunk at once, as
   * Session.injectKVAndPrefill and blendKVAndPrefill place them): a fetch thread reading several such objects from
   * shared memory hands their layers over in turns rather than one whole object after another (shm-hand-over.ts).
   * Leave it off for objects injected one after another.
   */
  interleave?: boolean;
}

export interface KvFetcher {
  /** Threads receiving besides the event loop (0: the event loop does it all). */
  readonly threads: number;
  /** Starts downloading `key`; resolves once the header arrived and matched `expect`. */
  open(key: string, expect: KVExpectation, signal: AbortSignal, options?: KvFetchOptions): Promise<FetchedObject>;
  /** Gives the threads receiving objects a transform table this process registered (verified bytes). */
  useTransformTable(bytes: Uint8Array): void;
  close(): Promise<void>;
}

/**
 * Fetch threads for a host with `cores` cores: all but four of them, or half where that is more, at most 12; none on
 * a single core. The four left over run the engine's thread, the event loop, libuv's pool and a same-host edge. On a
 * 16-core H100 host 8 threads received fp16 objects at 2.4 GB/s where 4 got 1.7 and the event loop alone 0.6
 * (bench/results/gpu/ttft-8b-8k-state-d-fetch-threads-*.json, delivery-gpu-host-*.json); on a 16-core H200 host 12
 * threads read and verified an 8k context's files about a third sooner than 8 (fetch-threads-ab-h200.json).
 */
export function defaultFetchThreads(cores: number = availableParallelism()): number {
  return Math.min(12, Math.max(Math.floor(cores / 2), cores - 4));
}

/** `sharedMemory: false` keeps every fetch on HTTP even from same-host edges (benchmarks compare the two). */
export function inThreadFetcher(edges: EdgeClient, options: { sharedMemory?: boolean } = {}): KvFetcher {
  const shm = options.sharedMemory === false ? undefined : new ShmSource(edges);
  return {
    threads: 0,
    async open(key, expect, signal) {
      const fast = await shm?.read(key, expect, true);
      if (fast) return fetchedFromShm(fast);
      const got = await edges.get(key, { signal });
      const reader = prefetchLayers(await readKVObject(got.body, expect));
      return { reader, servedFrom: got.servedFrom, edge: got.edge, received: () => got.body.received };
    },
    // The event loop reads with the process's own table registry.
    useTransformTable: () => undefined,
    async close() {},
  };
}

/** An object the fast path read whole: its layers are all there already. */
function fetchedFromShm(fast: ShmObject): FetchedObject {
  const queue = new LayerQueue();
  for (const block of fast.blocks) queue.push(block);
  queue.end();
  const reader: PrefetchedReader = { header: fast.header, layers: queue.layers(), drained: queue.drained };
  return { reader, servedFrom: 'shm', edge: fast.edge, received: () => fast.bytes };
}
