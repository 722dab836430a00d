/**
 * Time to first token of a knowledge-heavy query: `--contexts` tokens of context plus a `--question`-token
 * question, answered by
 *   inject, inject-int8, inject-int4: the context's KV objects (`--chunk`-token chunks, made once by the engine and
 *     put to a warm edge: its own `kdn edge` process, or with `--edge inline` one inside this process) fetched over
 *     HTTP in parallel, then as kdn's query path does (`--inject-path auto`): up to OVERLAP_MAX_CHUNKS chunks placed
 *     layer by layer with the question running each layer as soon as the context's copy of it is in (`overlapped`),
 *     more injected chunk by chunk, `--window` objects ahead, then the question prefilled (`sequential`);
 *   inject-transform: as inject, objects of the transform codec (`--transform-level`, default x8) on synthetic KV
 *     only (`--kv synthetic`): a table fitted on that KV, whose energy falls off across head dimensions as real
 *     KV's does (bench/lib/bench-transform.ts), given to the engine and the fetch threads first;
 *   blend, blend-int8, blend-int4: the same objects fetched the same way and handed with the question to
 *     Session.blendKVAndPrefill, which recomputes a `--blend-ratio` share of the context's tokens (picked as kdn's blend
 *     queries pick them, or by `--blend-selection`) while the context arrives;
 *   inject-hot: the context repeated, from the engine's hot tier: one query fetches and injects its int4 objects and keeps
 *     its chunks resident (as kdn's query path does after answering); each measured run places them again by copies
 *     on the device (Session.injectResident: nothing fetched), then prefills the question. vs_question is its TTFT over
 *     the question's own prefill in that run, vs_inject over inject-int4's;
 *   recompute: the engine prefills context and question;
 *   peer: transformers (bf16, sdpa) prefills the same token count (bench/peer_prefill.py; skipped with the reason
 *     where torch or CUDA is missing);
 *   peer-host-hit: the same transformers model with the context's KV (bf16) already in pinned host memory, as an
 *     inference server with a CPU-RAM KV tier has it on a local hit: copied to the GPU, then the question prefilled.
 *     Inject modes report both ratios: vs_peer (against the full prefill) and vs_host_hit (against this one).
 * With `--kv synthetic` the inject modes skip computing the context: every chunk object holds the same seeded random
 * KV, stored before RoPE (rotated at injection, as position-independent objects are), so long contexts of large
 * shapes are timed without a full prefill first; their first token is not compared with recompute's.
 * Inject records give the engine thread's time placing the context per query (kv_stage_ms copying blocks to the
 * device, kv_submit_ms recording and submitting their expansion in kv_submits batches of kv_dispatches dispatches,
 * kv_wait_ms waiting for a staging buffer, kv_read_blocks how many blocks were read into staging from a same-host
 * edge's file off that thread rather than copied; means over the runs and warmups, from Engine.work) and engine_loop_busy,
 * the share of those queries' time that thread's event loop was active, engine_gc_ms and engine_major_gcs its garbage
 * collection pauses and full collections per query: beside placed_ms they say whether that thread or the delivery
 * bounds it; block_wait_ms is how long placing had no block at hand while objects were still
 * coming (for the rest of placed_ms that thread was writing blocks or busy otherwise). first_layer_ms is when every
 * chunk's layer 0 was placed, when the question's first layer could run (overlapped and blended paths). With the
 * engine on its own thread (--engine-thread), engine_call_ms is when that thread began the query's inject call,
 * first_block_ms when the context's first block reached it and received_ms its last, beside fetch_ms, when this
 * thread heard the last object had arrived. ttft_ms is the median of --runs after --warmup, each on a new session;
 * ttft_runs_ms lists every run's, in order; with --idle-ms, idle_runs_ms how long the GPU had nothing asked of it
 * before each of them.
 * Every context size is measured on its own, so one failing (e.g. out of memory) records an error and the run goes
 * on; --max-seconds stops cleanly between measurements and keeps what was gathered.
 *
 *   npm run bench -- ttft --shape llama3.1-8b --contexts 1024,4096,8192,16384,32768 --backend webgpu --out ttft-gpu
 *   npm run bench -- ttft --shape shipped --contexts 256,512,1024 --backend cpu --out ttft-cpu
 * `--chunks N` cuts every context into N chunks (a retrieval query's top-N) instead of fixed `--chunk`-token ones.
 * `--engine-thread` runs the engine on its own thread, as kdn does (engine-adapter/worker): with --fetch-threads, the
 * objects' blocks then go from the fetch threads to the engine's without passing through the event loop, or with
 * `--hand-over loop` through it, as they did before (bench/lib/loop-hand-over.ts), to compare the two.
 * `--receive-buffer-mib N` is what each fetch thread keeps of the buffers the engine's thread sends back, to receive
 * later objects into (common/reused-buffers.ts; default kdn's, 0 for a new buffer per object); the records give it
 * and the share of bytes received into returned buffers.
 * `--spool-mib N` is what the fetch threads together may hold in memory files of blocks received over sockets for the
 * engine's thread (kdn/query/receive-spool.ts; default kdn's, 0 to send those blocks with their bytes); the records give
 * it and spool_share, the share of such blocks' bytes the spool took.
 * `--edge-shm` has the edge mirror its memory tier under /dev/shm and runs each inject and blend mode twice, records
 * marked `delivery`: 'socket' (loopback HTTP, as without the flag) then 'shm' (the same-host fast path,
 * kdn/query/shm-source.ts; a run where any object came over HTTP is an error, not a figure).
 * `--shm-order whole` has fetch threads hand over each shared-memory object whole, one after another, where kdn's
 * overlapped and blend paths take every object's layers in turns (`interleaved`, kdn/query/shm-hand-over.ts).
 * `--shm-verify alongside` has them announce every layer of such an object to the engine's thread before verifying
 * any, and verify while it reads them into staging (kv-fetch-pool.ts FetchPoolOptions.verifyAlongside), where they
 * verify each layer before handing it over by default (`before`).
 * `--format-version 1` puts objects of KV format version 1 (layers checked with sha256) instead of the current one
 * (BLAKE3), to compare what verification costs.
 * `--timeline FILE` writes, for every measured run of the overlapped and blend paths, the engine's timeline of the
 * call: gates, the question's pieces and when the GPU ran them, the injector's sends and reads, each layer's arrival
 * and writing (engine-adapter/placing-timeline.ts, bench/lib/timeline-file.ts), with engine_start_ms placing it on the
 * run's clock.
 * `--idle-ms N` leaves the GPU idle N ms before each measured query of every mode, the peer's too (its queries
 * otherwise run back to back, KDN's after their own set-up): a GPU that idled runs its next work at lower clocks.
 * `--sink prefill|resident` starts every inject, blend and inject-hot query's session with the model's sink token
 * (kdn/sink-token.ts) at position 0, the context after it from position 1, as kdn's query path does: `prefill`
 * computes it on every query (a one-token forward, as kdn did before f4877df), `resident` places it as kdn does now
 * (placeSink, then keepSinkResident off the time to first token, kdn/query/resident-chunks.ts): the first query (a
 * warmup) computes it and keeps it in the engine's hot tier, later ones copy it from there. It is placed once the
 * objects are requested, as kdn places it, inside the timed query (inject-hot: before its resident chunks, also in its
 * filling query, so they are kept at the rows they take). `none` (the default) places none, as before. Records give
 * sink, sink_ms (the step's median) and sink_computed_runs (measured runs that computed it rather than copied it);
 * recompute prefills no sink, so beside one first_token_matches_recompute is null.
 */
import { codecFromString, encodeKVObject, type LayerDigestVersion } from '../storage/kv-object/index.ts';
import type { CodecName } from '../storage/kv-object/types.ts';
import { choice, choiceList, formatVersion, parseFlags, positiveInt } from './lib/args.ts';
import { EDGE_PLACEMENTS, startBenchEdge, type BenchEdge, type EdgePlacement } from './lib/bench-edge.ts';
import { SPEED_OPTIONS, speedArgs, type SpeedArgs } from './lib/common-args.ts';
import { fetchAndInject, fetchBlendPrefill, fetchInjectPrefill, type BeforeContext, type FetchInjectTiming } from './lib/fetch-inject.ts';
import { TimelineFile, type TimelineRun } from './lib/timeline-file.ts';
import { blendOptions } from '../kdn/query/blend-policy.ts';
import { KdnError } from '../common/errors.ts';
import { createLogger } from '../common/log.ts';
import { computeSink, keepSinkResident, placeSink } from '../kdn/query/resident-chunks.ts';
import { overlapsPrompt } from '../kdn/query/overlap-policy.ts';
import { DEFAULT_RECEIVE_BUFFER_BYTES, DEFAULT_SPOOL_BYTES, KvFetchPool } from '../kdn/query/kv-fetch-pool.ts';
import type { ReusedBufferStats } from '../common/reused-buffers.ts';
import type { SpoolStats } from '../kdn/query/receive-spool.ts';
import { defaultFetchThreads, inThreadFetcher, type KvFetcher, type KvFetchOptions } from '../kdn/query/kv-fetcher.ts';
import { setTimeout as sleep } from 'node:timers/promises';
import { argmax } from './lib/logits.ts';
import { handOverOnLoop } from './lib/loop-hand-over.ts';
import { openBenchEngine, resolveTarget, type EngineTarget } from './lib/open-engine.ts';
import { PEER_REPS, runPeer, type PeerReport } from './lib/peer.ts';
import { median, round } from './lib/stats.ts';
import type { BenchEngine } from './lib/synthetic-engine.ts';
import {
  BLEND_SELECTIONS,
  kvBytesPerToken,
  parseModelConfig,
  type BlendOptions,
  kvWritesBetween,
  loopBusyBetween,
  type EngineWork,
  type ResidentKey,
  type Session,
} from '../engine-adapter/index.ts';
import { randomTokenIds } from './lib/token-ids.ts';
import { kvTensors } from '../fixtures/kv-data.ts';
import { BenchTransform, spectralKV } from './lib/bench-transform.ts';
import type { BenchRecord, BenchReport, BenchValue, Checkpoint } from './report.ts';

const MODES = [
  'inject',
  'inject-int8',
  'inject-int4',
  'inject-transform',
  'inject-hot',
  'blend',
  'blend-int8',
  'blend-int4',
  'recompute',
  'peer',
  'peer-host-hit',
] as const;
const KV_SOURCES = ['computed', 'synthetic'] as const;
type Mode = (typeof MODES)[number];
type InjectMode = Exclude<Mode, 'recompute' | 'peer' | 'peer-host-hit' | 'inject-hot'>;
/** The codec of the objects inject-hot's first query fetches before its chunks are resident. */
const HOT_FILL_CODEC: CodecName = 'int4';
const CODEC_OF: Record<InjectMode, CodecName> = {
  inject: 'fp16',
  'inject-int8': 'int8',
  'inject-int4': 'int4',
  'inject-transform': 'transform',
  blend: 'fp16',
  'blend-int8': 'int8',
  'blend-int4': 'int4',
};
/** The inject mode whose objects a blend mode blends: its TTFT is what blending is compared with. */
const INJECT_OF: Partial<Record<InjectMode, InjectMode>> = { blend: 'inject', 'blend-int8': 'inject-int8', 'blend-int4': 'inject-int4' };
/** Stored size relative to fp16 (int codecs carry scales; transform at its largest level is 1/4), for sizing the edge's memory tier with room to spare. */
const SIZE_FACTOR: Record<CodecName, number> = { fp16: 1.05, int8: 0.65, int4: 0.4, transform: 0.3 };

interface TtftArgs extends SpeedArgs {
  question: number;
  chunk: number;
  /** Chunks per context (the chunk size then follows each context), instead of a fixed --chunk. */
  chunks: number | null;
  modes: Mode[];
  window: number;
  /**
   * auto: kdn's query path (overlapped up to OVERLAP_MAX_CHUNKS chunks, else sequential); overlapped: the question run
   * under the context's arrival; sequential: chunk by chunk, then the question.
   */
  injectPath: (typeof INJECT_PATHS)[number];
  edge: EdgePlacement;
  fetchThreads: number;
  receiveBufferMib: number;
  spoolMib: number;
  /** Unmeasured recompute runs; a long context's recompute is the costliest measurement of a run. */
  recomputeWarmup: number;
  kv: (typeof KV_SOURCES)[number];
  blend: BlendOptions;
  /** The transform codec's level name (e.g. x8); undefined for the codec's default. */
  transformLevel: string | undefined;
  /** The edge mirrors its memory tier in shared memory, and each inject mode runs again reading it (delivery 'shm'). */
  edgeShm: boolean;
  /** The engine on its own thread, as kdn runs it, rather than on the event loop. */
  engineThread: boolean;
  /** How a fetch pool's blocks reach an engine on its own thread: from the fetch threads, or through the event loop. */
  handOver: (typeof HAND_OVERS)[number];
  /** How fetch threads hand over shared-memory objects on the overlapped and blend paths (shm-hand-over.ts). */
  shmOrder: (typeof SHM_ORDERS)[number];
  /** Whether fetch threads verify shared-memory layers before handing them over, or alongside the engine's reads. */
  shmVerify: (typeof SHM_VERIFIES)[number];
  /** KV format version of the objects put to the edge; it names the layer checksums' hash (layer-digest.ts). */
  formatVersion: LayerDigestVersion;
  /** Where the engine's placing timelines of the overlapped and blend paths' runs go (bench/lib/timeline-file.ts), if anywhere. */
  timeline: string | undefined;
  /**
   * Milliseconds every mode, the peer's included, leaves the GPU idle before each measured query. A GPU that idled
   * lowers its clocks, and the first work after that runs slower: with 0 the peer's queries run back to back while
   * KDN's wait on their own set-up between, so a figure in both conditions needs the same idle on both sides.
   */
  idleMs: number;
  /** The sink token at each query's start (SinkStep): none, computed every query, or kept in the hot tier as kdn does. */
  sink: Sink;
}

const HAND_OVERS = ['direct', 'loop'] as const;

const SHM_ORDERS = ['interleaved', 'whole'] as const;

const SHM_VERIFIES = ['before', 'alongside'] as const;

const INJECT_PATHS = ['auto', 'overlapped', 'sequential'] as const;

/** Where keeping the sink in the hot tier reports a failure (it costs only the next query's copy). */
const LOG = createLogger('bench-ttft');

const SINKS = ['none', 'prefill', 'resident'] as const;
type Sink = (typeof SINKS)[number];

function isInject(mode: Mode): mode is InjectMode {
  return mode in CODEC_OF;
}

function parse(args: string[]): TtftArgs {
  const values = parseFlags(args, {
    ...SPEED_OPTIONS,
    question: { type: 'string' },
    chunk: { type: 'string' },
    modes: { type: 'string' },
    window: { type: 'string' },
    'inject-path': { type: 'string' },
    edge: { type: 'string' },
    'fetch-threads': { type: 'string' },
    'receive-buffer-mib': { type: 'string' },
    'spool-mib': { type: 'string' },
    'recompute-warmup': { type: 'string' },
    kv: { type: 'string' },
    'blend-ratio': { type: 'string' },
    'blend-selection': { type: 'string' },
    chunks: { type: 'string' },
    'transform-level': { type: 'string' },
    'edge-shm': { type: 'boolean' },
    'engine-thread': { type: 'boolean' },
    'hand-over': { type: 'string' },
    'format-version': { type: 'string' },
    'shm-order': { type: 'string' },
    'shm-verify': { type: 'string' },
    timeline: { type: 'string' },
    'idle-ms': { type: 'string' },
    sink: { type: 'string' },
  });
  const speed = speedArgs(values, { contexts: [256, 512, 1024] });
  const kv = choice(values.kv, 'computed', KV_SOURCES, 'kv');
  // The transform codec's objects are built from synthetic KV only (see benchTransform).
  const defaultModes = kv === 'synthetic' ? MODES : MODES.filter((m) => m !== 'inject-transform');
  const modes = choiceList(values.modes, defaultModes, MODES, 'modes');
  if (kv !== 'synthetic' && modes.includes('inject-transform')) {
    throw new KdnError('INVALID_ARGUMENT', 'inject-transform runs on synthetic KV only', { hint: 'add --kv synthetic' });
  }
  return {
    ...speed,
    question: positiveInt(values.question, 64, 'question'),
    chunk: positiveInt(values.chunk, 256, 'chunk'),
    chunks: values.chunks === undefined ? null : positiveInt(values.chunks, 8, 'chunks'),
    modes,
    window: positiveInt(values.window, 16, 'window'),
    injectPath: choice(values['inject-path'], 'auto', INJECT_PATHS, 'inject-path'),
    edge: choice(values.edge, 'process', EDGE_PLACEMENTS, 'edge'),
    fetchThreads: values['fetch-threads'] === '0' ? 0 : positiveInt(values['fetch-threads'], defaultFetchThreads(), 'fetch-threads'),
    receiveBufferMib:
      values['receive-buffer-mib'] === '0'
        ? 0
        : positiveInt(values['receive-buffer-mib'], DEFAULT_RECEIVE_BUFFER_BYTES / 2 ** 20, 'receive-buffer-mib'),
    spoolMib: values['spool-mib'] === '0' ? 0 : positiveInt(values['spool-mib'], DEFAULT_SPOOL_BYTES / 2 ** 20, 'spool-mib'),
    recomputeWarmup: values['recompute-warmup'] === '0' ? 0 : positiveInt(values['recompute-warmup'], speed.warmup, 'recompute-warmup'),
    kv,
    blend: {
      ...blendOptions(ratio(values['blend-ratio'])),
      ...(values['blend-selection']
        ? { selection: choice(values['blend-selection'], 'attended', BLEND_SELECTIONS, 'blend-selection') }
        : {}),
    },
    transformLevel: values['transform-level'],
    edgeShm: values['edge-shm'] === true,
    engineThread: values['engine-thread'] === true,
    handOver: choice(values['hand-over'], 'direct', HAND_OVERS, 'hand-over'),
    shmOrder: choice(values['shm-order'], 'interleaved', SHM_ORDERS, 'shm-order'),
    shmVerify: choice(values['shm-verify'], 'before', SHM_VERIFIES, 'shm-verify'),
    formatVersion: formatVersion(values['format-version']),
    timeline: values.timeline,
    idleMs: values['idle-ms'] === '0' ? 0 : positiveInt(values['idle-ms'], 0, 'idle-ms'),
    sink: choice(values.sink, 'none', SINKS, 'sink'),
  };
}

function ratio(value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const r = Number(value);
  if (!(r >= 0 && r <= 1)) throw new KdnError('INVALID_ARGUMENT', `--blend-ratio must be from 0 to 1, got "${value}"`);
  return r;
}

/** One row of the table; figures a mode does not have stay null. */
function record(
  base: { device: string; shape: string; context: number; question: number; chunk: number },
  mode: Mode,
  fields: Partial<BenchRecord>,
): BenchRecord {
  return {
    device: base.device,
    shape: base.shape,
    context_tokens: base.context,
    question_tokens: base.question,
    chunk_tokens: base.chunk,
    mode,
    inject_path: null,
    ttft_ms: null,
    ttft_runs_ms: null,
    idle_runs_ms: null,
    runs: null,
    bytes: null,
    loop_block_bytes: null,
    kv_stage_ms: null,
    kv_submit_ms: null,
    kv_wait_ms: null,
    kv_submits: null,
    kv_read_blocks: null,
    kv_dispatches: null,
    engine_loop_busy: null,
    engine_gc_ms: null,
    engine_major_gcs: null,
    reserve_ms: null,
    fetch_ms: null,
    fetch_wait_ms: null,
    inject_ms: null,
    placed_ms: null,
    first_layer_ms: null,
    block_wait_ms: null,
    engine_call_ms: null,
    first_block_ms: null,
    received_ms: null,
    question_ms: null,
    first_token_matches_recompute: null,
    recomputed_tokens: null,
    blend_selection: null,
    sink: null,
    sink_ms: null,
    sink_computed_runs: null,
    vs_inject: null,
    vs_peer: null,
    vs_host_hit: null,
    vs_recompute: null,
    vs_question: null,
    note: null,
    ...fields,
  };
}

/** The share of bytes received between two readings of a pool that went into buffers the engine had returned. */
function reuseShare(before: ReusedBufferStats, after: ReusedBufferStats): number | null {
  const reused = after.reusedBytes - before.reusedBytes;
  const total = reused + after.freshBytes - before.freshBytes;
  return total === 0 ? null : round(reused / total);
}

/**
 * The share of the bytes routed to the engine's thread with no file of their own, between two readings of a pool,
 * that its spool took (receive-spool.ts); null when there were none.
 */
function spoolShare(before: SpoolStats, after: SpoolStats): number | null {
  const spooled = after.spooledBytes - before.spooledBytes;
  const total = spooled + after.sentBytes - before.sentBytes;
  return total === 0 ? null : round(spooled / total);
}

/** The rounded median of a figure the run's path has, else null. */
function medianOrNull(values: (number | null)[]): number | null {
  const known = values.filter((v): v is number => v !== null);
  return known.length === values.length ? round(median(known)) : null;
}

/** Every measured run's time to first token in ms, in the order run, space-separated (ttft_ms is their median). */
function runsOf(m: { results: { ms: number }[] }): string {
  return m.results.map((r) => round(r.ms)).join(' ');
}

/** How long each measured run waited idle before it, in ms, in the order run; null without --idle-ms. */
function idlesOf(m: { idles: number[] }): string | null {
  return m.idles.some((ms) => ms > 0) ? m.idles.map((ms) => round(ms)).join(' ') : null;
}

/** Progress on stderr, so a long GPU run shows where it is (quiet under tests). */
function progress(line: string): void {
  if (!process.env.KDN_TEST) process.stderr.write(`ttft: ${line}\n`);
}

/**
 * Median of `runs` measured calls after `warmup` unmeasured ones, each measured call after `idleMs` with nothing
 * asked of the GPU (TtftArgs.idleMs); `idles` is how long each one actually waited.
 */
async function measure<T extends { ms: number }>(
  warmup: number,
  runs: number,
  idleMs: number,
  once: () => Promise<T>,
): Promise<{ median: number; results: T[]; idles: number[] }> {
  for (let i = 0; i < warmup; i++) await once();
  const results: T[] = [];
  const idles: number[] = [];
  for (let i = 0; i < runs; i++) {
    if (idleMs > 0) {
      const began = performance.now();
      await sleep(idleMs);
      idles.push(performance.now() - began);
    } else idles.push(0);
    results.push(await once());
  }
  return { median: median(results.map((r) => r.ms)), results, idles };
}

/**
 * Puts the context's KV objects, chunk by chunk, in every codec the modes need. `source` already holds the context
 * (the last recompute run's session) or is null, and then a session prefills it here; either way it is disposed.
 */
async function putContextObjects(
  engine: BenchEngine,
  edge: BenchEdge,
  source: Session | null,
  context: number[],
  chunk: number,
  codecs: CodecName[],
  prefix: string,
  formatVersion: LayerDigestVersion,
): Promise<Map<CodecName, string[]>> {
  const keys = new Map<CodecName, string[]>(codecs.map((c) => [c, []]));
  const session = source ?? engine.createSession(context.length);
  try {
    if (source === null) await session.prefill(context, { logits: 'none' });
    for (let start = 0, i = 0; start < context.length; start += chunk, i++) {
      const end = Math.min(start + chunk, context.length);
      const kv = await session.exportKV({ start, end });
      for (const codec of codecs) {
        const key = `${prefix}/${codec}/chunk-${String(i).padStart(5, '0')}.kv`;
        const bytes = encodeKVObject(kv, {
          modelFingerprint: engine.info.fingerprint,
          tokenIds: context.slice(start, end),
          codec: codecFromString(codec),
          formatVersion,
        });
        await edge.client.put(key, bytes);
        keys.get(codec)!.push(key);
      }
    }
  } finally {
    session.dispose();
  }
  return keys;
}

/**
 * The same seeded random chunk, stored before RoPE, under every chunk key of the context, in each codec. Every
 * object is encoded before the first is put, so the puts go back to back (encoding a large chunk takes longer than
 * the edge keeps an idle connection).
 */
async function putSyntheticObjects(
  engine: BenchEngine,
  edge: BenchEdge,
  context: number,
  chunk: number,
  codecs: CodecName[],
  prefix: string,
  transform: { kit: BenchTransform; level: string | undefined } | null,
  formatVersion: LayerDigestVersion,
): Promise<Map<CodecName, string[]>> {
  const { layers, kvHeads, headDim, fingerprint } = engine.info;
  const chunks = Math.ceil(context / chunk);
  // A ragged last chunk gets an object of its own length.
  const lengths = [...new Set(Array.from({ length: chunks }, (_, i) => Math.min(chunk, context - i * chunk)))];
  const objects = new Map<string, Buffer>();
  for (const codec of codecs) {
    for (const tokens of lengths) {
      const shape = { layers, kvHeads, headDim, tokens };
      const kv = codec === 'transform' ? spectralKV(shape, 11) : { ...kvTensors(shape, 11), ropeApplied: false };
      const spec = codec === 'transform' ? transform!.kit.spec(transform!.level) : codecFromString(codec);
      const tokenIds = new Array<number>(tokens).fill(0);
      objects.set(`${codec}/${tokens}`, encodeKVObject(kv, { modelFingerprint: fingerprint, tokenIds, codec: spec, formatVersion }));
    }
  }
  const keys = new Map<CodecName, string[]>(codecs.map((c) => [c, []]));
  for (const codec of codecs) {
    for (let i = 0; i < chunks; i++) {
      const key = `${prefix}/${codec}/chunk-${String(i).padStart(5, '0')}.kv`;
      await edge.client.put(key, objects.get(`${codec}/${Math.min(chunk, context - i * chunk)}`)!);
      keys.get(codec)!.push(key);
    }
  }
  return keys;
}

const SYNTHETIC_NOTE = {
  transform: 'synthetic KV (seeded random, energy falling across head dimensions, before RoPE): timing only',
  other: 'synthetic KV (seeded random, stored before RoPE): timing only',
};

/** Each engine's transform table, fitted once (on the first context's chunk length) for every context of a run. */
const fitted = new WeakMap<BenchEngine, Promise<BenchTransform>>();
function benchTransform(engine: BenchEngine, a: TtftArgs): Promise<BenchTransform> {
  const { layers, kvHeads, headDim } = engine.info;
  let kit = fitted.get(engine);
  if (kit === undefined) {
    kit = BenchTransform.fit(engine, spectralKV({ layers, kvHeads, headDim, tokens: Math.min(a.chunk, 512) }, 11));
    fitted.set(engine, kit);
  }
  return kit;
}

/** What the overlapped and blend paths open their objects with: interleaved as kdn does, unless --shm-order whole. */
function fetchOptions(a: TtftArgs): KvFetchOptions {
  return { interleave: a.shmOrder === 'interleaved' };
}

/** The path a context of `chunks` objects takes under --inject-path `path`. */
function injectPathFor(path: TtftArgs['injectPath'], chunks: number): 'overlapped' | 'sequential' {
  if (path !== 'auto') return path;
  return overlapsPrompt(chunks) ? 'overlapped' : 'sequential';
}

interface InjectRun {
  ms: number;
  /** Overlapped or blend path with --timeline: the engine's timeline of this run. */
  timeline: TimelineRun | null;
  reserveMs: number;
  fetchMs: number;
  /** Sequential path: time waiting on objects not yet in, and inside injectKV. */
  fetchWaitMs: number | null;
  injectMs: number | null;
  /** Overlapped path: from the start to the context's last layer placed, and to every chunk's layer 0 placed. */
  placedMs: number | null;
  firstLayerMs: number | null;
  blockWaitMs: number | null;
  /**
   * Overlapped path, engine on its own thread: from the start to that thread beginning the call, to the context's
   * first block reaching it, and to its last.
   */
  handOverMs: { started: number; firstBlock: number; received: number } | null;
  /** The question's prefill (sequential), or what of it ran after the context was placed (overlapped). */
  questionMs: number;
  bytes: number;
  first: number;
  /** Blend modes: the context tokens recomputed. */
  recomputed: number | null;
  /** The sink's step (SinkStep): its time (null without one), and whether it was computed. */
  sinkMs: number | null;
  sinkComputed: boolean;
}

/**
 * The engine thread's time placing injected KV (engine-work.ts), per query over `queries` (warmups included), and how
 * busy that thread's event loop was meanwhile.
 */
function engineWorkPerQuery(before: EngineWork, after: EngineWork, queries: number) {
  const w = kvWritesBetween(before.kvWrites, after.kvWrites);
  const busy = loopBusyBetween(before.loop, after.loop);
  const per = (total: number): number => round(total / queries);
  return {
    kv_stage_ms: per(w.stageSeconds * 1000),
    kv_submit_ms: per(w.submitSeconds * 1000),
    kv_wait_ms: per(w.waitSeconds * 1000),
    kv_submits: per(w.submits),
    kv_read_blocks: per(w.readBlocks),
    kv_dispatches: per(w.dispatches),
    engine_loop_busy: busy === null ? null : round(busy),
    engine_gc_ms: per((after.loop.gcSeconds - before.loop.gcSeconds) * 1000),
    engine_major_gcs: per(after.loop.majorGcs - before.loop.majorGcs),
  };
}

/**
 * One query by injection per run, on a fresh session: the cache reserved for the whole sequence (as kdn's query
 * path does, timed), the sink placed as --sink says (SinkStep) once the objects are requested, then the context's
 * objects and the question, overlapped or one after the other, or blended with the question (`chunkIds`: the chunks'
 * token ids).
 */
function measureInject(
  engine: BenchEngine,
  fetcher: KvFetcher,
  keys: string[],
  context: number,
  questionIds: number[],
  path: 'overlapped' | 'sequential' | 'blended',
  a: TtftArgs,
  chunkIds: number[][],
) {
  return measure(a.warmup, a.runs, a.idleMs, async (): Promise<InjectRun> => {
    const sink = new SinkStep(engine, a.sink);
    const session = engine.createSession(sink.tokens + context + questionIds.length);
    try {
      const t0 = performance.now();
      await session.reserve(session.capacity);
      const q = { fetcher, keys, session, questionIds, a, t0, reserveMs: performance.now() - t0, before: () => sink.place(session) };
      const run = path === 'sequential' ? await injectSequential(q) : await injectTogether(q, path, chunkIds);
      await sink.keep(session);
      return { ...run, sinkMs: sink.ms, sinkComputed: sink.computed };
    } finally {
      session.dispose();
    }
  });
}

/** One measured query of measureInject, for the path that runs it. */
interface InjectQuery {
  fetcher: KvFetcher;
  keys: string[];
  session: Session;
  questionIds: number[];
  a: TtftArgs;
  /** When the query began, and how long reserving its cache took. */
  t0: number;
  reserveMs: number;
  /** The sink's placing (SinkStep.place), once the objects are requested. */
  before: BeforeContext;
}

type PathRun = Omit<InjectRun, 'sinkMs' | 'sinkComputed'>;

/** The context's objects and the question on the engine together: injected under the question, or blended with it. */
async function injectTogether(q: InjectQuery, path: 'overlapped' | 'blended', chunkIds: number[][]): Promise<PathRun> {
  const { fetcher, keys, session, questionIds, a, reserveMs } = q;
  const timeline = a.timeline !== undefined;
  const o =
    path === 'blended'
      ? await fetchBlendPrefill(fetcher, keys, chunkIds, session, questionIds, { ...a.blend, timeline }, fetchOptions(a), q.before)
      : {
          ...(await fetchInjectPrefill(
            fetcher,
            keys,
            chunkIds.map((ids) => ids.length),
            session,
            questionIds,
            fetchOptions(a),
            timeline,
            q.before,
          )),
          recomputed: null,
        };
  const ms = performance.now() - q.t0;
  const placing = o.timeline ?? null;
  return {
    ms,
    timeline: placing && { ttft_ms: round(ms), engine_start_ms: round(reserveMs + placing.startMs), timeline: placing.report },
    reserveMs,
    fetchMs: o.fetchMs,
    fetchWaitMs: null,
    injectMs: null,
    placedMs: reserveMs + o.placedMs,
    firstLayerMs: reserveMs + o.firstLayerMs,
    blockWaitMs: o.blockWaitMs,
    handOverMs: o.handOverMs && {
      started: reserveMs + o.handOverMs.started,
      firstBlock: reserveMs + o.handOverMs.firstBlock,
      received: reserveMs + o.handOverMs.received,
    },
    questionMs: o.questionTailMs,
    bytes: o.bytes,
    first: argmax(o.logits),
    recomputed: o.recomputed,
  };
}

/** The context's objects injected chunk by chunk, `--window` ahead, then the question prefilled. */
async function injectSequential(q: InjectQuery): Promise<PathRun> {
  const timing: FetchInjectTiming = await fetchAndInject(q.fetcher, q.keys, q.session, q.a.window, q.before);
  const q0 = performance.now();
  const first = argmax(await q.session.prefill(q.questionIds, { logits: 'last' }));
  const end = performance.now();
  return {
    ms: end - q.t0,
    timeline: null,
    reserveMs: q.reserveMs,
    fetchMs: timing.fetchMs,
    fetchWaitMs: timing.fetchWaitMs,
    injectMs: timing.injectMs,
    placedMs: null,
    firstLayerMs: null,
    blockWaitMs: null,
    handOverMs: null,
    questionMs: end - q0,
    bytes: timing.bytes,
    first,
    recomputed: null,
  };
}

/**
 * One query's sink token (--sink), placed at its session's start: none, computed by a one-token prefill every time
 * (kdn before f4877df), or as kdn's query path places it now (placeSink: copied from the engine's hot tier, computed
 * when not there) and, once computed, kept there after the query (keepSinkResident) for the next ones.
 */
class SinkStep {
  /** How long placing it took; null with none. */
  ms: number | null = null;
  /** Whether the engine computed it (a forward) rather than copied it. */
  computed = false;

  constructor(
    private readonly engine: BenchEngine,
    readonly sink: Sink,
  ) {}

  /** The positions it takes (sinkPositions). */
  get tokens(): number {
    return sinkPositions(this.sink);
  }

  async place(session: Session): Promise<void> {
    if (this.sink === 'none') return;
    const t0 = performance.now();
    if (this.sink === 'resident') this.computed = await placeSink(session, this.engine);
    else {
      await computeSink(session, this.engine);
      this.computed = true;
    }
    this.ms = performance.now() - t0;
  }

  /** After the query, off its time to first token, as kdn's query path does. */
  async keep(session: Session): Promise<void> {
    if (this.sink === 'resident' && this.computed) await keepSinkResident(session, this.engine, LOG);
  }
}

/** The positions a sink takes at a session's start: the context follows it. */
function sinkPositions(sink: Sink): number {
  return sink === 'none' ? 0 : 1;
}

/** A record's sink figures: which (--sink), its step's median time, and how many measured runs computed it. */
function sinkFields(sink: Sink, results: { sinkMs: number | null; sinkComputed: boolean }[]): Partial<BenchRecord> {
  return {
    sink,
    sink_ms: medianOrNull(results.map((r) => r.sinkMs)),
    sink_computed_runs: sink === 'none' ? null : results.filter((r) => r.sinkComputed).length,
  };
}

interface HotRun {
  ms: number;
  reserveMs: number;
  /** From the start to the last resident chunk placed (reserve included). */
  placedMs: number;
  questionMs: number;
  first: number;
  sinkMs: number | null;
  sinkComputed: boolean;
}

/**
 * inject-hot: one query through the overlapped path fills the hot tier with the context's chunks (fillHotTier), then
 * every run places them from it on a fresh session, after the sink (SinkStep), and prefills the question.
 */
async function measureHot(engine: BenchEngine, fetcher: KvFetcher, keys: string[], context: number, questionIds: number[], a: TtftArgs) {
  const resident = await fillHotTier(engine, fetcher, keys, context, questionIds, a);
  return measure(a.warmup, a.runs, a.idleMs, async (): Promise<HotRun> => {
    const sink = new SinkStep(engine, a.sink);
    const session = engine.createSession(sink.tokens + context + questionIds.length);
    try {
      const t0 = performance.now();
      await session.reserve(session.capacity);
      const reserveMs = performance.now() - t0;
      await sink.place(session);
      for (const key of resident) {
        const placed = await session.injectResident(key, session.length);
        if (!placed) throw new KdnError('INTERNAL', `chunk ${key.objectKey} left the hot tier`);
      }
      const q0 = performance.now();
      const first = argmax(await session.prefill(questionIds, { logits: 'last' }));
      const end = performance.now();
      await sink.keep(session);
      return { ms: end - t0, reserveMs, placedMs: q0 - t0, questionMs: end - q0, first, sinkMs: sink.ms, sinkComputed: sink.computed };
    } finally {
      session.dispose();
    }
  });
}

/**
 * inject-hot's filling query: the context's objects injected under the question, after the sink if --sink asks for
 * one, then each chunk kept in the hot tier at the rows it took there, where the measured runs place it again.
 */
async function fillHotTier(
  engine: BenchEngine,
  fetcher: KvFetcher,
  keys: string[],
  context: number,
  questionIds: number[],
  a: TtftArgs,
): Promise<ResidentKey[]> {
  // One tenant, and the object key stands in for the token hash: every key here names one chunk.
  const resident = keys.map((objectKey) => ({ tenant: 'bench', objectKey, tokenHash: objectKey }));
  const sink = new SinkStep(engine, a.sink);
  const fill = engine.createSession(sink.tokens + context + questionIds.length);
  try {
    await fill.reserve(fill.capacity);
    const tokens = keys.map((_, i) => Math.min(a.chunk, context - i * a.chunk));
    await fetchInjectPrefill(fetcher, keys, tokens, fill, questionIds, undefined, false, () => sink.place(fill));
    await sink.keep(fill);
    for (const [i, key] of resident.entries()) {
      const start = sink.tokens + i * a.chunk;
      await fill.keepResident(key, { start, end: Math.min(start + a.chunk, sink.tokens + context) });
    }
    const held = await fill.residentChunks(resident);
    if (!held.every(Boolean)) {
      const kept = held.filter(Boolean).length;
      throw new KdnError('INTERNAL', `the hot tier kept ${kept} of ${keys.length} chunks`, { hint: 'a larger hot tier' });
    }
    return resident;
  } finally {
    fill.dispose();
  }
}

/** The peer's row for one length: its full prefill, or its local host-memory hit (the KV copy split out in fetch_ms). */
function peerRecord(
  base: Parameters<typeof record>[0],
  mode: 'peer' | 'peer-host-hit',
  peer: PeerReport | undefined,
  tokens: number,
): BenchRecord {
  const at = { ...base, device: peer?.available ? peer.device : 'none' };
  if (!peer?.available) return record(at, mode, { note: peer === undefined ? 'not run' : `skipped: ${peer.reason}` });
  const p = peer.byTokens.get(tokens);
  const ms = mode === 'peer' ? p?.prefill_ms : p?.host_hit_ms;
  if (ms === undefined) {
    return record(at, mode, { note: (mode === 'peer' ? undefined : p?.host_hit_error) ?? p?.error ?? 'no result for this length' });
  }
  if (mode === 'peer') return record(at, mode, { ttft_ms: round(ms), runs: PEER_REPS, note: peer.label });
  const copyMs = p?.host_hit_copy_ms;
  return record(at, mode, {
    ttft_ms: round(ms),
    runs: PEER_REPS,
    bytes: p?.host_hit_bytes ?? null,
    fetch_ms: copyMs === undefined ? null : round(copyMs),
    question_ms: copyMs === undefined ? null : round(ms - copyMs),
    note: `${peer.label}; context KV (bf16) in pinned host memory: fetch_ms is its copy to the GPU`,
  });
}

async function measureContext(
  engine: BenchEngine,
  args: TtftArgs,
  shape: string,
  context: number,
  peer: PeerReport | undefined,
  timelines: TimelineFile | null,
): Promise<BenchRecord[]> {
  const a = { ...args, chunk: args.chunks === null ? args.chunk : Math.ceil(context / args.chunks) };
  const base = { device: engine.device, shape, context, question: a.question, chunk: a.chunk };
  const vocab = engine.info.vocabSize;
  const contextIds = randomTokenIds(context, vocab, context);
  const questionIds = randomTokenIds(a.question, vocab, context + 1);
  const out = new Map<Mode, BenchRecord>();
  /** With --edge-shm: each inject mode again over the same-host fast path. */
  const shmOut = new Map<Mode, BenchRecord>();
  let recomputeFirst: number | undefined;

  const skipped = (mode: Mode): boolean => {
    if (!a.deadline.expired) return false;
    out.set(mode, record(base, mode, { note: a.deadline.reason }));
    return true;
  };
  // A failing mode (e.g. out of GPU memory) records its error; the other modes and context sizes still run.
  const attempt = async (modes: Mode[], fn: () => Promise<void>): Promise<void> => {
    progress(`${shape} ${context} tokens: ${modes.join(', ')}`);
    try {
      await fn();
    } catch (err) {
      const note = `error: ${(err as Error).message}`.slice(0, 500);
      for (const mode of modes) if (!out.has(mode)) out.set(mode, record(base, mode, { note }));
    }
  };

  // The last recompute run's session holds the context's KV: the inject modes export their objects from it rather
  // than prefilling the context again (which for an 8B shape at 32k tokens is most of the run).
  let kept: Session | null = null;
  if (a.modes.includes('recompute') && !skipped('recompute'))
    await attempt(['recompute'], async () => {
      const all = [...contextIds, ...questionIds];
      const m = await measure(a.recomputeWarmup, a.runs, a.idleMs, async () => {
        kept?.dispose();
        kept = null;
        const session = engine.createSession(all.length);
        try {
          const t0 = performance.now();
          const first = argmax(await session.prefill(all, { logits: 'last' }));
          const ms = performance.now() - t0;
          kept = session;
          return { ms, first };
        } finally {
          if (kept !== session) session.dispose();
        }
      });
      recomputeFirst = m.results.at(-1)!.first;
      out.set(
        'recompute',
        record(base, 'recompute', { ttft_ms: round(m.median), ttft_runs_ms: runsOf(m), idle_runs_ms: idlesOf(m), runs: a.runs }),
      );
    });

  const injectModes = a.modes.filter(isInject);
  const objectModes: Mode[] = [...injectModes, ...(a.modes.includes('inject-hot') ? (['inject-hot'] as const) : [])];
  if (objectModes.length > 0 && !a.deadline.expired)
    await attempt(objectModes, async () => {
      const codecs = [...new Set([...injectModes.map((m) => CODEC_OF[m]), ...(a.modes.includes('inject-hot') ? [HOT_FILL_CODEC] : [])])];
      const budget = codecs.reduce((sum, c) => sum + SIZE_FACTOR[c], 0) * engine.info.kvBytesPerToken * context + 64 * 2 ** 20;
      const maxObjectBytes = Math.ceil(engine.info.kvBytesPerToken * a.chunk * 1.1) + 2 ** 20;
      const edge = await startBenchEdge(Math.ceil(budget), maxObjectBytes, a.edge, a.edgeShm);
      try {
        const prefix = `kv/bench/ttft/${shape.replace(/[^A-Za-z0-9._=-]/g, '_')}/${context}`;
        let keys: Map<CodecName, string[]>;
        const transform = codecs.includes('transform') ? { kit: await benchTransform(engine, a), level: a.transformLevel } : null;
        if (a.kv === 'synthetic') {
          keys = await putSyntheticObjects(engine, edge, contextIds.length, a.chunk, codecs, prefix, transform, a.formatVersion);
        } else {
          const source = kept;
          kept = null;
          keys = await putContextObjects(engine, edge, source, contextIds, a.chunk, codecs, prefix, a.formatVersion);
        }
        // Each fetcher's pool, whose count of block bytes handed to the event loop the records show.
        const pools = new Map<KvFetcher, KvFetchPool>();
        const fetcherOf = (sharedMemory: boolean): KvFetcher => {
          if (a.fetchThreads === 0) return inThreadFetcher(edge.client, { sharedMemory });
          const pool = new KvFetchPool(edge.clientOptions, a.fetchThreads, {
            sharedMemory,
            receiveBufferBytes: a.receiveBufferMib * 2 ** 20,
            spoolBytes: a.spoolMib * 2 ** 20,
            deliverEagerly: !a.engineThread || a.handOver === 'loop',
            verifyAlongside: a.shmVerify === 'alongside',
          });
          const fetcher = a.handOver === 'loop' ? handOverOnLoop(pool) : pool;
          pools.set(fetcher, pool);
          return fetcher;
        };
        const fetcher = fetcherOf(false);
        const shmFetcher = a.edgeShm ? fetcherOf(true) : null;
        transform?.kit.useIn(fetcher);
        if (shmFetcher) transform?.kit.useIn(shmFetcher);
        // Recompute's first token is the injected context's only for the same KV, and with no sink (recompute has none).
        const comparable = recomputeFirst !== undefined && a.kv !== 'synthetic' && a.sink === 'none';
        try {
          const measureMode = async (mode: InjectMode, via: KvFetcher, delivery: 'socket' | 'shm'): Promise<BenchRecord> => {
            const modeKeys = keys.get(CODEC_OF[mode])!;
            const path = INJECT_OF[mode] ? 'blended' : injectPathFor(a.injectPath, modeKeys.length);
            const chunkIds = modeKeys.map((_, i) =>
              a.kv === 'synthetic'
                ? new Array<number>(Math.min(a.chunk, context - i * a.chunk)).fill(0)
                : contextIds.slice(i * a.chunk, (i + 1) * a.chunk),
            );
            const servedBefore = await bytesServed(edge);
            const pool = pools.get(via);
            const loopBytesBefore = pool?.deliveredBytes ?? 0;
            const buffersBefore = pool?.receiveBuffers;
            const spoolBefore = pool?.spool;
            const workBefore = await engine.work();
            const m = await measureInject(engine, via, modeKeys, contextIds.length, questionIds, path, a, chunkIds);
            const runs = m.results.flatMap((r) => (r.timeline ? [r.timeline] : []));
            timelines?.add({ context_tokens: context, mode, delivery: a.edgeShm ? delivery : null, inject_path: path, runs });
            const writes = engineWorkPerQuery(workBefore, await engine.work(), a.warmup + a.runs);
            const loopBytes = pool ? pool.deliveredBytes - loopBytesBefore : null;
            const reusedShare = pool && buffersBefore ? reuseShare(buffersBefore, pool.receiveBuffers) : null;
            const spooledShare = pool && spoolBefore ? spoolShare(spoolBefore, pool.spool) : null;
            // The fast path's figure must be the fast path's: not one object may have come over the socket.
            if (delivery === 'shm' && (await bytesServed(edge)) !== servedBefore) {
              const hint = 'is /dev/shm (or the temp folder) writable, and large enough for the edge memory tier?';
              throw new KdnError('INTERNAL', 'objects came over HTTP in a --edge-shm measurement', { hint });
            }
            const last = m.results.at(-1)!;
            return record(base, mode, {
              ...(a.edgeShm ? { delivery } : {}),
              ttft_ms: round(m.median),
              ttft_runs_ms: runsOf(m),
              idle_runs_ms: idlesOf(m),
              runs: a.runs,
              bytes: last.bytes,
              loop_block_bytes: loopBytes,
              ...writes,
              ...(pool
                ? {
                    receive_buffer_mib: a.receiveBufferMib,
                    receive_reused_share: reusedShare,
                    spool_mib: a.spoolMib,
                    spool_share: spooledShare,
                  }
                : {}),
              reserve_ms: round(median(m.results.map((r) => r.reserveMs))),
              inject_path: path,
              fetch_ms: round(median(m.results.map((r) => r.fetchMs))),
              fetch_wait_ms: medianOrNull(m.results.map((r) => r.fetchWaitMs)),
              inject_ms: medianOrNull(m.results.map((r) => r.injectMs)),
              placed_ms: medianOrNull(m.results.map((r) => r.placedMs)),
              first_layer_ms: medianOrNull(m.results.map((r) => r.firstLayerMs)),
              block_wait_ms: medianOrNull(m.results.map((r) => r.blockWaitMs)),
              engine_call_ms: medianOrNull(m.results.map((r) => r.handOverMs?.started ?? null)),
              first_block_ms: medianOrNull(m.results.map((r) => r.handOverMs?.firstBlock ?? null)),
              received_ms: medianOrNull(m.results.map((r) => r.handOverMs?.received ?? null)),
              question_ms: round(median(m.results.map((r) => r.questionMs))),
              first_token_matches_recompute: comparable ? last.first === recomputeFirst : null,
              recomputed_tokens: last.recomputed,
              blend_selection: INJECT_OF[mode] ? a.blend.selection : null,
              ...sinkFields(a.sink, m.results),
              note: a.kv !== 'synthetic' ? null : SYNTHETIC_NOTE[mode === 'inject-transform' ? 'transform' : 'other'],
            });
          };
          for (const mode of injectModes) {
            if (skipped(mode)) continue;
            await attempt([mode], async () => {
              out.set(mode, await measureMode(mode, fetcher, 'socket'));
            });
            if (shmFetcher && !a.deadline.expired) {
              try {
                shmOut.set(mode, await measureMode(mode, shmFetcher, 'shm'));
              } catch (err) {
                shmOut.set(mode, record(base, mode, { delivery: 'shm', note: `error: ${(err as Error).message}`.slice(0, 500) }));
              }
            }
          }
          if (a.modes.includes('inject-hot') && !skipped('inject-hot')) {
            await attempt(['inject-hot'], async () => {
              const m = await measureHot(engine, fetcher, keys.get(HOT_FILL_CODEC)!, contextIds.length, questionIds, a);
              const questionMs = median(m.results.map((r) => r.questionMs));
              out.set(
                'inject-hot',
                record(base, 'inject-hot', {
                  ttft_ms: round(m.median),
                  ttft_runs_ms: runsOf(m),
                  idle_runs_ms: idlesOf(m),
                  runs: a.runs,
                  bytes: 0,
                  inject_path: 'resident',
                  reserve_ms: round(median(m.results.map((r) => r.reserveMs))),
                  placed_ms: round(median(m.results.map((r) => r.placedMs))),
                  question_ms: round(questionMs),
                  vs_question: round(m.median / questionMs, 3),
                  first_token_matches_recompute: comparable ? m.results.at(-1)!.first === recomputeFirst : null,
                  ...sinkFields(a.sink, m.results),
                }),
              );
            });
          }
        } finally {
          await fetcher.close();
          await shmFetcher?.close();
        }
      } finally {
        await edge.close();
      }
    });
  (kept as Session | null)?.dispose();
  for (const mode of objectModes) if (!out.has(mode)) skipped(mode);

  for (const mode of ['peer', 'peer-host-hit'] as const) {
    if (a.modes.includes(mode)) out.set(mode, peerRecord(base, mode, peer, context + a.question));
  }

  const peerMs = out.get('peer')?.ttft_ms;
  const hostHitMs = out.get('peer-host-hit')?.ttft_ms;
  const recomputeMs = out.get('recompute')?.ttft_ms;
  const hot = out.get('inject-hot');
  const int4 = out.get('inject-int4')?.ttft_ms;
  if (hot && typeof hot.ttft_ms === 'number' && typeof int4 === 'number') hot.vs_inject = round(hot.ttft_ms / int4, 3);
  const measured = [
    ...injectModes.map((m) => [m, out.get(m), out] as const),
    ...injectModes.map((m) => [m, shmOut.get(m), shmOut] as const),
  ];
  for (const [mode, r, same] of measured) {
    if (!r || typeof r.ttft_ms !== 'number') continue;
    if (typeof peerMs === 'number') r.vs_peer = round(r.ttft_ms / peerMs, 3);
    if (typeof hostHitMs === 'number') r.vs_host_hit = round(r.ttft_ms / hostHitMs, 3);
    if (typeof recomputeMs === 'number') r.vs_recompute = round(r.ttft_ms / recomputeMs, 3);
    const injected = INJECT_OF[mode] && same.get(INJECT_OF[mode])?.ttft_ms;
    if (typeof injected === 'number') r.vs_inject = round(r.ttft_ms / injected, 3);
  }
  return a.modes.flatMap((mode) => [out.get(mode), shmOut.get(mode)]).filter((r) => r !== undefined);
}

export async function run(args: string[], checkpoint?: Checkpoint): Promise<BenchReport> {
  const a = parse(args);
  const target = await resolveTarget(a.shape, a.model);
  const maxContext = Math.max(...a.contexts);
  const records: BenchRecord[] = [];

  // The peer runs first, alone on the GPU, for every length in one process (its model is built once).
  let peer: PeerReport | undefined;
  if (a.modes.includes('peer') || a.modes.includes('peer-host-hit')) {
    const timeoutMs = Number.isFinite(a.deadline.seconds) ? a.deadline.remainingSeconds * 1000 * 0.4 : 60 * 60 * 1000;
    const hostHitQuestion = a.modes.includes('peer-host-hit') ? a.question : 0;
    peer = await runPeer({
      hfConfig: target.hfConfig,
      tokens: a.contexts.map((c) => c + a.question),
      timeoutMs,
      hostHitQuestion,
      idleMs: a.idleMs,
    });
  }

  // Lengths past the model's positions fail on their own (recorded); the engine opens for what it can hold.
  const maxPositions = Number(target.hfConfig.max_position_embeddings);
  const sinkTokens = sinkPositions(a.sink);
  const capacity = Math.min(sinkTokens + maxContext + a.question, maxPositions);
  // inject-hot keeps the longest context resident: f32 K and V of every layer (twice the fp16 bytes per token); a
  // resident sink one row, given two for the rounding of its buffers' sizes.
  const f32BytesPerToken = 2 * kvBytesPerToken(parseModelConfig(target.hfConfig, target.shape));
  const hotBytes = a.modes.includes('inject-hot') ? Math.ceil(f32BytesPerToken * capacity * 1.05) : 0;
  const hotTierBytes = hotBytes + (a.sink === 'resident' ? 2 * f32BytesPerToken : 0);
  const engine = await openBenchEngine(target, a.backend, capacity, { hotTierBytes, thread: a.engineThread });
  const timelines = a.timeline === undefined ? null : new TimelineFile(a.timeline, `npm run bench -- ttft ${args.join(' ')}`);
  const report = (): BenchReport => ({ params: ttftParams(a, target, engine, peer), records });
  try {
    for (const context of a.contexts) {
      records.push(...(await measureContext(engine, a, target.shape, context, peer, timelines)));
      // Each finished context is on disk: a run cut off by its time limit keeps what it measured.
      await checkpoint?.(report());
      await timelines?.write();
    }
    return report();
  } finally {
    await engine.dispose();
  }
}

/** The report's parameters: what was measured, on what, and how each figure is timed. */
function ttftParams(a: TtftArgs, target: EngineTarget, engine: BenchEngine, peer: PeerReport | undefined): Record<string, BenchValue> {
  return {
    shape: target.shape,
    model: target.modelDir ?? `synthetic ${target.shape} (random weights)`,
    fingerprint: engine.info.fingerprint,
    parameters: engine.info.parameters,
    kvBytesPerTokenFp16: engine.info.kvBytesPerToken,
    backend: engine.backend,
    device: engine.device,
    chunkTokens: a.chunks === null ? a.chunk : `context / ${a.chunks}`,
    questionTokens: a.question,
    runs: a.runs,
    warmup: a.warmup,
    recomputeWarmup: a.recomputeWarmup,
    kv:
      a.kv === 'synthetic'
        ? 'synthetic: every chunk object the same seeded random KV stored before RoPE (timing only)'
        : 'computed by the engine from the context',
    fetchWindow: a.window,
    kvFormatVersion: a.formatVersion,
    shmOrder: a.edgeShm ? a.shmOrder : null,
    shmVerify: a.edgeShm ? a.shmVerify : null,
    idleMs: a.idleMs,
    sink: a.sink,
    fetchThreads: a.fetchThreads,
    receiveBufferMib: a.fetchThreads > 0 ? a.receiveBufferMib : null,
    spoolMib: a.fetchThreads > 0 ? a.spoolMib : null,
    engineThread: a.engineThread
      ? a.handOver === 'direct'
        ? "its own (engine-adapter/worker): the fetch pool's blocks go there from the fetch threads"
        : "its own (engine-adapter/worker): the fetch pool's blocks go there through the event loop (--hand-over loop)"
      : 'the event loop (the fetch pool hands its blocks over here)',
    edge:
      a.edge === 'process'
        ? 'a kdn edge process on this machine (loopback HTTP)'
        : 'an edge inside the benchmark process (loopback HTTP, same event loop)',
    peer: peer === undefined ? 'not requested' : peer.available ? `${peer.label} on ${peer.device}` : `unavailable: ${peer.reason}`,
    maxSeconds: Number.isFinite(a.deadline.seconds) ? a.deadline.seconds : null,
    timing:
      'ttft_ms: median of runs, from the start of a query on a fresh session to the first token id on the host; inject modes split ' +
      "into reserve (sizing the session's cache for the query) and fetch (first request to last body), then by inject_path: resident " +
      "(inject-hot, the context placed from the engine's hot tier, filled by one query of int4 objects) into placed (start to the " +
      "last chunk placed) and question (its prefill); overlapped into placed (start to the context's last layer placed; received: to its last block reaching the engine's own thread) and question (the question's compute left after that), sequential into fetch_wait (injector idle waiting for bodies), inject and question prefill; " +
      'loop_block_bytes: layer-block bytes a fetch pool handed to the event loop over the runs (0: all went to the engine thread directly); ' +
      "with --sink, the sink token's placing (sink_ms) is inside the query, from when the objects are requested",
    injectPath: a.injectPath,
    blend: `ratio ${a.blend.ratio}, selection ${a.blend.selection}`,
  };
}

/** Body bytes the bench edge has served over HTTP so far. */
async function bytesServed(edge: BenchEdge): Promise<number> {
  const [stats] = await edge.client.stats();
  if (!stats?.stats) throw new KdnError('INTERNAL', `the bench edge did not report its stats: ${stats?.error ?? 'no answer'}`);
  return stats.stats.served.bytesServed;
}
