/**
 * The inject path of a query as the TTFT benchmark measures it: every chunk object is requested from the edge
 * in parallel (a bounded window ahead) and verified layer by layer while it streams in (hashes off the event loop,
 * see storage/kv-object/layer-block.ts), and chunks are injected in order as soon as each has fully arrived, so
 * transfer and verification overlap injection.
 */
import type { EdgeClient } from '../../edge/client.ts';
import type { Session } from '../../engine-adapter/index.ts';
import { prefetchLayers, type PrefetchedReader } from '../../kdn/query/prefetch.ts';
import { readKVObject } from '../../storage/kv-object/index.ts';

export interface FetchInjectTiming {
  /** From the first request to the last body fully received and verified. */
  fetchMs: number;
  /** Time the injector sat waiting for a body that had not arrived yet (the part of fetching not hidden). */
  fetchWaitMs: number;
  /** Time inside injectKV: decode/dequantize, upload, re-rotation (layers arrive verified). */
  injectMs: number;
  bytes: number;
}

/** What the pipeline injects into: an engine session, or a sink that only consumes layers (bench/delivery.ts). */
export type InjectTarget = Pick<Session, 'length' | 'injectKV'>;

interface Arrival {
  reader: PrefetchedReader;
  bytes: number;
  arrivedAt: number;
}

/** Streams one object in, verifying each layer as it completes; resolves once every layer is in (or the stream failed). */
async function fetchVerified(client: EdgeClient, key: string): Promise<Arrival> {
  const got = await client.get(key);
  const reader = prefetchLayers(await readKVObject(got.body));
  await reader.drained;
  return { reader, bytes: got.body.received, arrivedAt: performance.now() };
}

/** Fetches `keys` and injects them into `session` from its current length on; `window` bounds objects held at once. */
export async function fetchAndInject(client: EdgeClient, keys: readonly string[], session: InjectTarget, window: number): Promise<FetchInjectTiming> {
  const t0 = performance.now();
  const inFlight: (Promise<Arrival> | undefined)[] = [];
  let launched = 0;
  const launch = (done: number): void => {
    while (launched < keys.length && launched - done < window) {
      const p = fetchVerified(client, keys[launched]!);
      // Awaited in order below; this keeps a later failure from surfacing as unhandled while an earlier one waits.
      p.catch(() => undefined);
      inFlight[launched++] = p;
    }
  };
  const timing: FetchInjectTiming = { fetchMs: 0, fetchWaitMs: 0, injectMs: 0, bytes: 0 };
  let lastArrival = t0;
  for (let i = 0; i < keys.length; i++) {
    launch(i);
    const waitStart = performance.now();
    const { reader, bytes, arrivedAt } = await inFlight[i]!;
    inFlight[i] = undefined;
    timing.fetchWaitMs += performance.now() - waitStart;
    lastArrival = Math.max(lastArrival, arrivedAt);
    timing.bytes += bytes;
    const injectStart = performance.now();
    // A layer that failed verification is raised here, before anything after it reaches the engine.
    await session.injectKV(reader, session.length);
    timing.injectMs += performance.now() - injectStart;
  }
  timing.fetchMs = lastArrival - t0;
  return timing;
}
