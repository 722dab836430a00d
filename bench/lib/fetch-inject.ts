/**
 * The inject path of a query as the benchmarks measure it. Objects come through a fetcher (kdn/query/kv-fetcher.ts:
 * on the event loop with hashes on the hash pool, or on fetch worker threads) that verifies each layer as it streams
 * in. fetchInjectPrefill is kdn's query path: every object requested at once (interleaved, as kdn opens them, unless
 * `fetch` says otherwise), the objects and the question handed to Session.injectKVAndPrefill together, so the
 * question runs each layer once every chunk's copy of it is in.
 * fetchAndInject is the chunk-by-chunk path (kdn's fallback, and the delivery benchmark's sink): objects requested a
 * bounded window ahead and injected in order, each once it has fully arrived.
 */
import { setMaxListeners } from 'node:events';
import type { BlendOptions, InjectedPrefill, PlacingTimelineReport, Session } from '../../engine-adapter/index.ts';
import type { FetchedObject, KvFetcher, KvFetchOptions } from '../../kdn/query/kv-fetcher.ts';
import type { PrefetchedReader } from '../../kdn/query/prefetch.ts';

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

export interface OverlappedTiming {
  /** From the first request to the last object fully received and verified. */
  fetchMs: number;
  /** From the first request to the last layer placed in the cache, and to every object's layer 0 placed. */
  placedMs: number;
  firstLayerMs: number;
  /** How long placing had no block at hand while objects were still coming (InjectedPrefill.blockWaitMs). */
  blockWaitMs: number;
  /**
   * An engine on its own thread (else null), from the first request: to that thread beginning the call, to the first
   * block reaching it, and to the last.
   */
  handOverMs: { started: number; firstBlock: number; received: number } | null;
  /** From the last layer placed to the question's logits: what the overlap leaves of the question's compute. */
  questionTailMs: number;
  bytes: number;
  logits: Float32Array;
  /** With `timeline` asked for: the engine's (placing-timeline.ts), its zero `startMs` after the first request. */
  timeline?: { startMs: number; report: PlacingTimelineReport };
}

/**
 * A step run once every object is requested and before their headers are awaited, on the same session: kdn's query
 * path places the sink token there (kdn/query/run-query.ts injectContext), so it overlaps the requests.
 */
export type BeforeContext = () => Promise<void>;

/**
 * Fetches `keys` (objects of `tokens[i]` tokens) and runs them with `question` through session.injectKVAndPrefill,
 * from the session's length, as kdn does: at once, each object's header still on its way. With `timeline`, the engine
 * records when the call's parts happened (OverlappedTiming.timeline). `before`: BeforeContext.
 */
export function fetchInjectPrefill(
  fetcher: KvFetcher,
  keys: readonly string[],
  tokens: readonly number[],
  session: Pick<Session, 'injectKVAndPrefill'>,
  question: number[],
  fetch: KvFetchOptions = { interleave: true },
  timeline = false,
  before?: BeforeContext,
): Promise<OverlappedTiming> {
  const run = (opened: Promise<FetchedObject>[]) =>
    session.injectKVAndPrefill(
      opened.map((o, i) => ({ tokens: tokens[i]!, reader: o.then((f) => f.reader) })),
      question,
      { logits: 'last', timeline },
    );
  return fetchTogether(fetcher, keys, fetch, run, before);
}

/**
 * Fetches `keys` (the chunks whose token ids are `chunkIds`) and blends them with `question` through
 * session.blendKVAndPrefill, from the session's length; adds the context tokens recomputed. `blend.timeline` as
 * fetchInjectPrefill's `timeline`, `before` its `before`.
 */
export async function fetchBlendPrefill(
  fetcher: KvFetcher,
  keys: readonly string[],
  chunkIds: readonly number[][],
  session: Pick<Session, 'blendKVAndPrefill'>,
  question: number[],
  blend: BlendOptions,
  fetch: KvFetchOptions = { interleave: true },
  before?: BeforeContext,
): Promise<OverlappedTiming & { recomputed: number }> {
  let recomputed = 0;
  // As kdn blends: once every header is in.
  const run = async (opened: Promise<FetchedObject>[]) => {
    const readers = (await Promise.all(opened)).map((f) => f.reader);
    const out = await session.blendKVAndPrefill(
      readers.map((object, i) => ({ object, tokenIds: chunkIds[i]! })),
      question,
      blend,
    );
    recomputed = out.recomputed;
    return out;
  };
  const timing = await fetchTogether(fetcher, keys, fetch, run, before);
  return { ...timing, recomputed };
}

/** Opens every object at once and hands them, as they are being opened, to `run` together (see fetchInjectPrefill). */
async function fetchTogether(
  fetcher: KvFetcher,
  keys: readonly string[],
  fetch: KvFetchOptions,
  run: (opened: Promise<FetchedObject>[]) => Promise<InjectedPrefill>,
  before?: BeforeContext,
): Promise<OverlappedTiming> {
  const t0 = performance.now();
  const signal = new AbortController().signal;
  setMaxListeners(keys.length + 8, signal);
  const opened = keys.map((key) => fetcher.open(key, {}, signal, fetch));
  for (const p of opened) p.catch(() => undefined);
  await before?.();
  let lastArrival = t0;
  const arrivals = opened.map((p) =>
    p.then((f) => f.reader.drained).then(() => void (lastArrival = Math.max(lastArrival, performance.now()))),
  );
  const { logits, placedAt, firstLayerAt, blockWaitMs, handOver, timeline } = await run(opened);
  const end = performance.now();
  const fetched = await Promise.all(opened);
  await Promise.all(arrivals);
  const bytes = fetched.reduce((n, f) => n + f.received(), 0);
  const handOverMs = handOver
    ? { started: handOver.startedAt - t0, firstBlock: handOver.firstBlockAt - t0, received: handOver.receivedAt - t0 }
    : null;
  return {
    fetchMs: lastArrival - t0,
    placedMs: placedAt - t0,
    firstLayerMs: firstLayerAt - t0,
    blockWaitMs,
    handOverMs,
    questionTailMs: end - placedAt,
    bytes,
    logits,
    ...(timeline ? { timeline: { startMs: timeline.startedAtEpoch - performance.timeOrigin - t0, report: timeline } } : {}),
  };
}

interface Arrival {
  reader: PrefetchedReader;
  bytes: number;
  arrivedAt: number;
}

/** Streams one object in, verifying each layer as it completes; resolves once every layer is in (or the stream failed). */
async function fetchVerified(fetcher: KvFetcher, key: string, signal: AbortSignal): Promise<Arrival> {
  const got = await fetcher.open(key, {}, signal);
  await got.reader.drained;
  return { reader: got.reader, bytes: got.received(), arrivedAt: performance.now() };
}

/**
 * Fetches `keys` and injects them into `session` from its current length on; `window` bounds objects held at once.
 * `before` (BeforeContext) runs once the first window is requested.
 */
export async function fetchAndInject(
  fetcher: KvFetcher,
  keys: readonly string[],
  session: InjectTarget,
  window: number,
  before?: BeforeContext,
): Promise<FetchInjectTiming> {
  const t0 = performance.now();
  // One signal per query, as run-query passes it: every object in flight listens on it.
  const signal = new AbortController().signal;
  setMaxListeners(window + 8, signal);
  const inFlight: (Promise<Arrival> | undefined)[] = [];
  let launched = 0;
  const launch = (done: number): void => {
    while (launched < keys.length && launched - done < window) {
      const p = fetchVerified(fetcher, keys[launched]!, signal);
      // Awaited in order below; this keeps a later failure from surfacing as unhandled while an earlier one waits.
      p.catch(() => undefined);
      inFlight[launched++] = p;
    }
  };
  const timing: FetchInjectTiming = { fetchMs: 0, fetchWaitMs: 0, injectMs: 0, bytes: 0 };
  launch(0);
  await before?.();
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
