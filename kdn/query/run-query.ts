import { setMaxListeners } from 'node:events';
import { KdnError } from '../../common/errors.ts';
import { performance } from 'node:perf_hooks';
import type { Logger } from '../../common/log.ts';
import type { KvFetcher } from './kv-fetcher.ts';
import {
  isAwaited,
  type BlendOptions,
  type Engine,
  type GeneratedToken,
  type GenerateResult,
  type InjectedObject,
  type Session,
} from '../../engine-adapter/types.ts';
import { tokenHash } from '../../storage/kv-object/index.ts';
import type { KVExpectation } from '../../storage/kv-object/types.ts';
import { sinkToken } from '../sink-token.ts';
import type { ContextPiece } from './context-plan.ts';
import { ChunkFetch, type ChunkTier } from './fetch-chunk.ts';
import { keepFetchedResident, keepSinkResident, placeResidentPrefix, placeSink, residentKeys } from './resident-chunks.ts';
import type { LevelChoice } from './level-policy.ts';
import { overlapsPrompt } from './overlap-policy.ts';

export type QueryMode = 'inject' | 'recompute' | 'blend';

export interface QueryRun {
  /** Whose query: the engine's hot tier keeps and finds chunks per tenant. */
  tenant: string;
  pieces: ContextPiece[];
  /** Tokens after the context: the question in the prompt format, or an OpenAI prompt. */
  promptIds: number[];
  mode: QueryMode;
  /** How 'blend' recomputes the context (required with it). */
  blend?: BlendOptions;
  maxTokens: number;
  temperature: number;
  topP?: number;
  seed?: number;
  stopStrings: string[];
  onToken?: (token: GeneratedToken) => void;
  /** Stops fetching and generating (the client went away). */
  signal?: AbortSignal;
  /** performance.now() when the request arrived, so ttft and total include retrieval and queueing. */
  arrivedAt: number;
  retrievalMs: number;
}

export interface ChunkUse {
  document: string;
  title: string;
  index: number;
  score: number | null;
  kind: 'chained' | 'independent';
  /** Codec of the chunk's object (one of the stored levels), whether it was fetched or computed instead. */
  codec: string;
  tokens: number;
  /** The edge tier that served the object, or 'computed' when the engine prefilled the chunk instead. */
  tier: ChunkTier;
  edge?: string;
  bytes: number;
}

export interface QueryOutcome {
  answer: string;
  /** Set when the context is not what was asked for (named documents too long for the model, see QueryService). */
  note?: string;
  finishReason: GenerateResult['finishReason'];
  mode: QueryMode;
  chunks: ChunkUse[];
  /** The stored level picked for a TTFT target (level-policy.ts); null when the main codec was used as always. */
  level: LevelChoice | null;
  tokens: {
    /** Knowledge tokens in the context. */
    context: number;
    /** Context tokens whose KV was injected from objects. */
    reused: number;
    /** Tokens the engine prefilled: the sink token, missed or recomputed chunks, and the prompt. */
    computed: number;
    prompt: number;
    generated: number;
  };
  /** Bytes of KV objects received from the edges. */
  bytes: number;
  /** Chunks placed from the engine's hot tier (resident from an earlier query: nothing fetched). */
  residentChunks: number;
  /**
   * What a blended query recomputed: the share asked for, the context tokens recomputed through every layer, the
   * layers every context token ran, and the milliseconds from the call to the prompt's logits (placing included).
   * null when the query did not blend, or fell back to chunk-by-chunk injection because an object failed.
   */
  blend: { ratio: number; selection: BlendOptions['selection']; recomputedTokens: number; fullLayers: number; ms: number } | null;
  /**
   * Milliseconds. With the prompt run under the context's arrival (overlap-policy.ts), injection ends when the
   * context's last layer is placed and prefill is the prompt's compute left after that (plus the sink token);
   * otherwise injection is the time inside chunk-by-chunk injection and prefill the prompt's whole prefill (plus the
   * sink token and chunks computed instead of injected).
   */
  timings: { retrieval: number; queue: number; fetch: number; injection: number; prefill: number; ttft: number; total: number };
}

export interface QueryDeps {
  engine: Engine;
  fetcher: KvFetcher;
  log: Logger;
  /** Told of each object an edge answered KV_CORRUPT for (its origin copy is bad), so it can be repaired. */
  onCorrupt?: (key: string) => void;
}

/** Object fetch attempts per chunk before the engine computes it; the second goes to the edge client's next choice. */
const FETCH_ATTEMPTS = 2;

/** Runs one query on the engine (the caller holds the engine queue and reports the level it picked the pieces at). */
export async function runQuery(deps: QueryDeps, run: QueryRun): Promise<Omit<QueryOutcome, 'level'>> {
  const startedAt = performance.now();
  const queueMs = startedAt - run.arrivedAt - run.retrievalMs;
  const contextTokens = run.pieces.reduce((n, p) => n + p.tokenIds.length, 0);
  const session = deps.engine.createSession({ capacity: 1 + contextTokens + run.promptIds.length + run.maxTokens });
  const abort = new AbortController();
  const stop = run.signal ? AbortSignal.any([abort.signal, run.signal]) : abort.signal;
  // Every chunk fetch of the query listens on this one signal.
  setMaxListeners(run.pieces.length + 8, stop);
  try {
    // The whole sequence's KV cache at once, rather than growing (and copying) chunk by chunk.
    await session.reserve(session.capacity);
    const recompute = run.mode === 'recompute' || run.pieces.length === 0;
    const built: BuiltContext = recompute
      ? {
          uses: run.pieces.map((p) => use(p, 'computed', 0)),
          fetchMs: 0,
          injectionMs: 0,
          computedMs: 0,
          computedTokens: 0,
          sinkComputed: false,
          promptMs: null,
          blend: null,
        }
      : await injectWithResident(deps, session, run, stop);

    const prefillIds = recompute ? [sinkToken(deps.engine), ...run.pieces.flatMap((p) => p.tokenIds), ...run.promptIds] : run.promptIds;
    let promptMs = built.promptMs;
    if (promptMs === null) {
      const prefillStart = performance.now();
      await session.prefill(prefillIds, { logits: 'last' });
      promptMs = performance.now() - prefillStart;
    }
    const prefillMs = promptMs + built.computedMs;

    let firstTokenAt: number | undefined;
    const result = await session.generate(
      {
        maxTokens: run.maxTokens,
        temperature: run.temperature,
        topP: run.topP,
        seed: run.seed,
        stopStrings: run.stopStrings,
        signal: stop,
      },
      (token) => {
        firstTokenAt ??= performance.now();
        run.onToken?.(token);
      },
    );
    const end = performance.now();
    // Off the time to first token: the rows stay in the session until it is disposed.
    if (run.mode === 'inject' && !recompute) await keepFetchedResident(session, residentKeys(run), built.uses, deps.log);
    if (built.sinkComputed) await keepSinkResident(session, deps.engine, deps.log);
    const times = { queueMs, prefillMs, firstTokenAt: firstTokenAt ?? end, end };
    return outcome(run, built, result, { context: contextTokens, computed: prefillIds.length + built.computedTokens }, times);
  } finally {
    abort.abort();
    session.dispose();
  }
}

/** What a query reports: its answer, the chunks it used and where each came from, its tokens, bytes and timings. */
function outcome(
  run: QueryRun,
  built: BuiltContext,
  result: GenerateResult,
  tokens: { context: number; computed: number },
  times: { queueMs: number; prefillMs: number; firstTokenAt: number; end: number },
): Omit<QueryOutcome, 'level'> {
  const reused = built.uses.filter((u) => u.tier !== 'computed').reduce((n, u) => n + u.tokens, 0);
  return {
    answer: result.text,
    finishReason: result.finishReason,
    mode: run.mode,
    chunks: built.uses,
    tokens: {
      context: tokens.context,
      reused,
      computed: tokens.computed,
      prompt: run.promptIds.length,
      generated: result.tokens.length,
    },
    bytes: built.uses.reduce((n, u) => n + u.bytes, 0),
    residentChunks: built.uses.filter((u) => u.tier === 'engine').length,
    blend: built.blend,
    timings: {
      retrieval: run.retrievalMs,
      queue: times.queueMs,
      fetch: built.fetchMs,
      injection: built.injectionMs,
      prefill: times.prefillMs,
      ttft: times.firstTokenAt - run.arrivedAt,
      total: times.end - run.arrivedAt,
    },
  };
}

interface BuiltContext {
  uses: ChunkUse[];
  fetchMs: number;
  injectionMs: number;
  /** Time spent placing the sink token and prefilling chunks that could not be injected. */
  computedMs: number;
  /** Tokens prefilled while building the context. */
  computedTokens: number;
  /** The sink was prefilled, not placed from the hot tier: kept there once the query is answered. */
  sinkComputed: boolean;
  /** The prompt's prefill time beyond the context's placing when it ran with it (null: the prompt is still to run). */
  promptMs: number | null;
  blend: QueryOutcome['blend'];
}

/**
 * injectContext, after the leading chunks the engine's hot tier holds (inject mode only: a blend recomputes from
 * objects) were placed from it: [sink][resident chunks] then the rest as injectContext places them.
 */
async function injectWithResident(deps: QueryDeps, session: Session, run: QueryRun, signal: AbortSignal): Promise<BuiltContext> {
  if (run.mode !== 'inject') return injectContext(deps, session, run, signal);
  const keys = residentKeys(run);
  const held = await session.residentChunks(keys);
  // With nothing to place first, the fetches start before the sink is placed, as they always did.
  if (!held[0]) return injectContext(deps, session, run, signal);
  const placed = await placeResidentPrefix(session, deps.engine, keys, held);
  const sinkTokens = placed.sinkComputed ? 1 : 0;
  const resident = run.pieces.slice(0, placed.count).map((p) => use(p, 'engine', 0));
  const rest = run.pieces.slice(placed.count);
  if (rest.length === 0) {
    const { injectMs, sinkMs, sinkComputed } = placed;
    return {
      uses: resident,
      fetchMs: 0,
      injectionMs: injectMs,
      computedMs: sinkMs,
      computedTokens: sinkTokens,
      sinkComputed,
      promptMs: null,
      blend: null,
    };
  }
  const built = await injectContext(deps, session, { ...run, pieces: rest }, signal, true);
  // A device that rejected the resident copies rolls them back at its next check, under the rest's placing, which
  // would leave the rest where the resident chunks belong.
  const contextTokens = run.pieces.reduce((n, p) => n + p.tokenIds.length, 0);
  if (session.length !== 1 + contextTokens + (built.promptMs === null ? 0 : run.promptIds.length)) {
    const message = 'the session does not hold the context where this query placed it (chunks from the hot tier were rolled back)';
    throw new KdnError('ENGINE_UNAVAILABLE', message, { hint: 'retry the query' });
  }
  return {
    ...built,
    uses: [...resident, ...built.uses],
    injectionMs: built.injectionMs + placed.injectMs,
    computedMs: built.computedMs + placed.sinkMs,
    computedTokens: built.computedTokens + sinkTokens,
    sinkComputed: placed.sinkComputed,
  };
}

/**
 * [sink], then every chunk object fetched in parallel. When the chunks are few enough (see overlap-policy.ts), the
 * objects and the prompt go to the engine together at once, headers still on their way: layer l of the prompt runs
 * once layer l of every chunk is in, so the prompt's compute overlaps the transfer (Session.injectKVAndPrefill). A
 * blend waits for every header, then recomputes a share of the context with the prompt (Session.blendKVAndPrefill).
 * Otherwise, or when that fails midway (an object's header or layers included), the chunks are injected one by one in
 * context order: a chunk whose object cannot be fetched or verified is fetched once more (the edge client fails
 * over), then prefilled from its tokens. The query never fails for a cache's sake.
 */
async function injectContext(
  deps: QueryDeps,
  session: Session,
  run: QueryRun,
  signal: AbortSignal,
  sinkPlaced = false,
): Promise<BuiltContext> {
  const { engine, fetcher, log } = deps;
  const { pieces } = run;
  const expectations = pieces.map((p) => expectationFor(engine, p));
  const fetchStart = performance.now();
  const overlapped = new AbortController();
  const overlappedSignal = AbortSignal.any([signal, overlapped.signal]);
  setMaxListeners(pieces.length + 8, overlappedSignal);
  const together = run.mode === 'blend' || overlapsPrompt(pieces.length);
  const first = pieces.map((p, i) => new ChunkFetch(fetcher, p.key, expectations[i]!, overlappedSignal, { interleave: together }));

  const sinkStart = performance.now();
  const sinkComputed = sinkPlaced ? false : await placeSink(session, engine);
  const sinkMs = performance.now() - sinkStart;
  const sinkTokens = sinkComputed ? 1 : 0;

  // Fetches not consumed here (a blend's header failed, or too many chunks to overlap) are reused chunk by chunk.
  let reusable = first;
  const objects = together ? await togetherObjects(run, first) : undefined;
  if (objects) {
    const injectStart = performance.now();
    try {
      const { placedAt, blend } = await runTogether(session, run, objects);
      const end = performance.now();
      await Promise.all(first.map((f) => f.done));
      const uses = pieces.map((p, i) => ({
        ...use(p, first[i]!.tier, first[i]!.bytes),
        ...(first[i]!.edge ? { edge: first[i]!.edge } : {}),
      }));
      return {
        uses,
        fetchMs: lastArrival(first, fetchStart) - fetchStart,
        injectionMs: placedAt - injectStart,
        computedMs: sinkMs,
        computedTokens: sinkTokens,
        sinkComputed,
        promptMs: end - placedAt,
        blend: blend && { ...blend, ms: end - injectStart },
      };
    } catch (err) {
      // An object failed (its header, or a layer midway) or the device did: objects may be partly consumed, so all are
      // fetched again.
      log.warn({ err }, `${run.mode === 'blend' ? 'blended' : 'overlapped'} injection failed; injecting chunk by chunk`);
      overlapped.abort();
      reusable = [];
    }
  }
  // Reused fetches started with the query; after a failed overlap, the fetches start again now.
  const since = reusable === first ? fetchStart : performance.now();
  const built = await injectOneByOne(deps, session, pieces, expectations, reusable, since, signal);
  return { ...built, computedMs: built.computedMs + sinkMs, computedTokens: built.computedTokens + sinkTokens, sinkComputed };
}

/**
 * What goes to the engine together: to inject, every object as it is fetched, its header possibly still on its way
 * (the engine sets its rows aside by the chunk's token count and places its layers once they come); to blend, the
 * objects once every header is in (a blend checks each chunk's tokens against its header first), or undefined when
 * one failed.
 */
async function togetherObjects(run: QueryRun, fetches: readonly ChunkFetch[]): Promise<InjectedObject[] | undefined> {
  if (run.mode !== 'blend') return fetches.map((f, i) => ({ tokens: run.pieces[i]!.tokenIds.length, reader: f.reader }));
  const headers = await Promise.allSettled(fetches.map((f) => f.reader));
  const readers = headers.flatMap((h) => (h.status === 'fulfilled' ? [h.value] : []));
  return readers.length === fetches.length ? readers : undefined;
}

/** The context's objects and the prompt on the engine together: injected under the prompt, or blended with it. */
async function runTogether(
  session: Session,
  run: QueryRun,
  objects: readonly InjectedObject[],
): Promise<{ placedAt: number; blend: Omit<NonNullable<QueryOutcome['blend']>, 'ms'> | null }> {
  if (run.mode !== 'blend') {
    const { placedAt } = await session.injectKVAndPrefill(objects, run.promptIds, { logits: 'last' });
    return { placedAt, blend: null };
  }
  const options = run.blend;
  if (!options) throw new KdnError('INTERNAL', 'a blend query came without its blend options');
  const chunks = objects.map((object, i) => {
    if (isAwaited(object)) throw new KdnError('INTERNAL', 'a blend takes its objects with their headers in');
    return { object, tokenIds: run.pieces[i]!.tokenIds };
  });
  const out = await session.blendKVAndPrefill(chunks, run.promptIds, options);
  return {
    placedAt: out.placedAt,
    blend: { ratio: options.ratio, selection: options.selection, recomputedTokens: out.recomputed, fullLayers: out.fullLayers },
  };
}

/**
 * The chunks injected in context order (see injectContext); `reusable` holds unconsumed fetches by piece, if any, and
 * `fetchStart` is when the fetches began.
 */
async function injectOneByOne(
  deps: QueryDeps,
  session: Session,
  pieces: ContextPiece[],
  expectations: KVExpectation[],
  reusable: ChunkFetch[],
  fetchStart: number,
  signal: AbortSignal,
): Promise<Omit<BuiltContext, 'sinkComputed'>> {
  const { fetcher } = deps;
  const fetches = pieces.map((p, i) => reusable[i] ?? new ChunkFetch(fetcher, p.key, expectations[i]!, signal));
  // A fetch that fails before its header arrives is retried at once, not when injection reaches its chunk: with the
  // origin down every chunk's attempts would otherwise wait out the edge's timeout one chunk after another.
  const retries = fetches.map((f, i) =>
    f.reader.then(
      () => undefined,
      () => new ChunkFetch(fetcher, pieces[i]!.key, expectations[i]!, signal),
    ),
  );
  let computedMs = 0;
  let computedTokens = 0;

  const uses: ChunkUse[] = [];
  let injectionMs = 0;
  for (const [i, piece] of pieces.entries()) {
    const refetch = async () => (await retries[i]) ?? new ChunkFetch(fetcher, piece.key, expectations[i]!, signal);
    const { fetch, received, ms } = await injectPiece(deps, session, piece, fetches[i]!, refetch);
    injectionMs += ms;
    if (fetch) {
      await fetch.done;
      uses.push({ ...use(piece, fetch.tier, received + fetch.bytes), ...(fetch.edge ? { edge: fetch.edge } : {}) });
      continue;
    }
    const start = performance.now();
    await session.prefill(piece.tokenIds, { logits: 'none' });
    computedMs += performance.now() - start;
    computedTokens += piece.tokenIds.length;
    uses.push(use(piece, 'computed', received));
  }
  await Promise.all(fetches.map((f) => f.done));
  return {
    uses,
    fetchMs: lastArrival(fetches, fetchStart) - fetchStart,
    injectionMs,
    computedMs,
    computedTokens,
    promptMs: null,
    blend: null,
  };
}

/**
 * Injects `piece` from `first`, then from `refetch()` while attempts remain. Returns the fetch that went in (none when
 * every attempt failed: the caller computes the chunk), the bytes the failed attempts received, and the time spent
 * injecting.
 */
async function injectPiece(
  deps: QueryDeps,
  session: Session,
  piece: ContextPiece,
  first: ChunkFetch,
  refetch: () => Promise<ChunkFetch>,
): Promise<{ fetch?: ChunkFetch; received: number; ms: number }> {
  let received = 0;
  let ms = 0;
  let fetch: ChunkFetch | undefined = first;
  for (let attempt = 1; fetch; attempt++) {
    const start = performance.now();
    try {
      await session.injectKV(await fetch.reader, session.length);
      return { fetch, received, ms: ms + performance.now() - start };
    } catch (err) {
      ms += performance.now() - start;
      received += fetch.bytes;
      deps.log.warn({ key: piece.key, edge: fetch.edge, attempt, err }, 'chunk object unusable');
      // Checked by code: errors from the fetch threads arrive rebuilt, not as the same class.
      if ((err as { code?: unknown }).code === 'KV_CORRUPT') deps.onCorrupt?.(piece.key);
      fetch = attempt < FETCH_ATTEMPTS ? await refetch() : undefined;
    }
  }
  return { received, ms };
}

/** When the last of `fetches` ended, and `since` if none ended after it. */
function lastArrival(fetches: readonly ChunkFetch[], since: number): number {
  return Math.max(since, ...fetches.map((f) => f.arrivedAt ?? since));
}

function expectationFor(engine: Engine, piece: ContextPiece): KVExpectation {
  const { fingerprint, layers, kvHeads, headDim } = engine.info;
  return { modelFingerprint: fingerprint, layers, kvHeads, headDim, tokens: piece.tokenIds.length, tokenHash: tokenHash(piece.tokenIds) };
}

function use(piece: ContextPiece, tier: ChunkTier, bytes: number): ChunkUse {
  return {
    document: piece.docId,
    title: piece.title,
    index: piece.index,
    score: piece.score,
    kind: piece.kind,
    codec: piece.codec,
    tokens: piece.tokenIds.length,
    tier,
    bytes,
  };
}
