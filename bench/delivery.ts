/**
 * KV delivery from a warm edge into the engine, minus the engine: how many GB/s of chunk objects reach the
 * injector over loopback HTTP, per codec, at each stage of the path:
 *   ceiling:  plain node:http GETs of the same objects (keep-alive, signed), bodies discarded: what the transport gives;
 *   fetch:    EdgeClient.get, streamed body discarded;
 *   verified: EdgeClient.get + readKVObject, every layer verified and consumed;
 *   pipeline: bench/lib/fetch-inject.ts (what bench/ttft.ts measures), injecting into a sink that consumes layers;
 *   product:  kdn/query's ChunkFetch on the event loop (what a query runs with --fetch-threads 0), injected in order
 *             into the same sink;
 *   threads:  the same over a KvFetchPool of --fetch-threads workers (default kdn's: all cores but four or half of
 *             them, at most 12), each receiving and verifying;
 *   shm-read: the same-host fast path's ceiling: the objects' files in the edge's shared-memory folder read whole
 *             (--parallel at once, on the event loop), bytes discarded;
 *   shm:      the threads stage over the fast path: the pool's workers read each object from shared memory and verify
 *             it instead of receiving it over a socket (kdn/query/shm-source.ts);
 *   shm-interleaved, shm-whole: the fast path as the overlapped query path takes it: every object opened at once and
 *             every object's layers consumed as they come, the threads handing the objects' layers over in turns
 *             (interleaved, as kdn opens them) or each object whole after the other; `layer0Ms` is when every object's
 *             layer 0 was in, when the question's first layer could start (kdn/query/shm-hand-over.ts);
 *   shm-placed, shm-placed-arrival: shm-interleaved routed to a thread of its own as to the engine's, which copies
 *             each block into a staging buffer as the injector does (bench/lib/placing-thread.ts): the lowest layer
 *             first among the blocks that have arrived (as Session places them, engine-adapter/layer-order.ts), or
 *             each object's blocks as they come; `layer0Ms` is when every object's layer 0 was placed there;
 *             `--place-cost-us N` keeps that thread busy N us more per block, as the engine's thread is with its
 *             other work, so that it falls behind the fetch threads as the engine's does on a GPU host;
 *   shm-placed-alongside: shm-placed with the layers verified alongside the placing (FetchPoolOptions.verifyAlongside:
 *             every layer announced first, the placing thread reading them while the fetch threads verify);
 *             `layer0Ms` is when every object's layer 0 was placed and verified;
 *   placed:   the same over sockets (the threads stage routed to that thread, lowest layer first): as kdn runs a query
 *             with the engine on its own thread and no same-host edge; the placing thread sends buffers back as the
 *             engine's does, and the fetch threads receive later objects into them (common/reused-buffers.ts);
 * and on a WebGPU adapter (asked for by name, not run by default), the engine's injection without a model
 * (bench/lib/gpu-inject-target.ts), each record with the host's time in the writes and the wait for the GPU:
 *   gpu-staged: verified blocks held in memory, staged and copied to the GPU only (no expansion);
 *   gpu:        the same, expanded into the f32 cache as the engine does (gpu - gpu-staged: the expansion);
 *   engine:     the threads stage into that injection: edge to expanded cache, the hand-over to the engine's own
 *               thread excepted (blocks are injected on the fetch pool's receiving thread here);
 *   shm-engine: a same-host edge's memory tier to expanded cache as kdn's engine thread has it: the objects routed
 *               to this thread, each layer as where it lies in the edge's file, read from there into staging.
 * Where time goes, stage by stage (each stage includes the ones before it): ceiling (socket), fetch (edge client),
 * verified (hashing), threads (parallel verification and the hand-over by transfer), engine (staging, copy and
 * expansion as in gpu).
 * The edge runs in process with a secret and a memory tier holding every object (as bench/lib/bench-edge.ts),
 * mirrored under /dev/shm (or the temp folder where there is none) for the shm stages; the socket stages never
 * read that mirror.
 * Each round runs every stage once per codec, stages interleaved; figures are medians over --rounds after one
 * warmup round. `--format-versions 1,2` runs every stage on objects of each KV format version side by side (records'
 * `format`; version 1 checks layers with sha256, 2 with BLAKE3; default the version encoders write).
 * `--before <results.json>` adds the GB/s of an earlier run of this benchmark per row, for comparison.
 *
 *   npm run bench -- delivery [--objects 16] [--parallel 16] [--rounds 5] [--codecs fp16,int8,int4]
 *                             [--stages ceiling,fetch,verified,pipeline,product,threads,shm-read,shm,shm-interleaved,shm-whole,
 *                                       shm-placed,shm-placed-arrival,shm-placed-alongside,placed,gpu-staged,gpu,engine,shm-engine]
 *                             [--fetch-threads N] [--format-versions 1,2] [--place-cost-us 0]
 *                             [--layers 32 --kv-heads 8 --head-dim 128 --tokens 256] [--before <file>]
 */
import { randomBytes } from 'node:crypto';
import { setMaxListeners } from 'node:events';
import { existsSync } from 'node:fs';
import { readFile, mkdir, mkdtemp, rm } from 'node:fs/promises';
import { Agent, request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { MessageChannel } from 'node:worker_threads';
import { pino } from 'pino';
import { KdnError } from '../common/errors.ts';
import { secretSigner, type EdgeSigner } from '../common/edge-token.ts';
import { EdgeClient } from '../edge/client/client.ts';
import { BlockChannel } from '../engine-adapter/worker/block-channel.ts';
import { isRoutable } from '../engine-adapter/worker/routed-stream.ts';
import { defaultFetchThreads } from '../kdn/query/kv-fetcher.ts';
import { EDGE_HEADERS, kvPath, shmObjectName } from '../edge/protocol.ts';
import { startEdge, type RunningEdge } from '../edge/server/main.ts';
import { ChunkFetch, type ChunkTier } from '../kdn/query/fetch-chunk.ts';
import { KvFetchPool } from '../kdn/query/kv-fetch-pool.ts';
import { inThreadFetcher, type KvFetcher, type KvFetchOptions } from '../kdn/query/kv-fetcher.ts';
import { codecFromString, encodeKVObject, readKVObject, tokenHash, type LayerDigestVersion } from '../storage/kv-object/index.ts';
import type { CodecName, KVExpectation, KVHeader, KVLayerBlock, KVObjectReader } from '../storage/kv-object/types.ts';
import { kvTensors, tokenIds } from '../fixtures/kv-data.ts';
import { choiceList, formatVersions, parseFlags, positiveInt } from './lib/args.ts';
import { fetchAndInject, type InjectTarget } from './lib/fetch-inject.ts';
import { GpuInjectTarget, type GpuInjectTiming } from './lib/gpu-inject-target.ts';
import { PlacingThread, type PlacingOrder } from './lib/placing-thread.ts';
import { median, round } from './lib/stats.ts';
import type { BenchRecord, BenchReport } from './report.ts';

const CODECS = ['fp16', 'int8', 'int4'] as const satisfies readonly CodecName[];
const CPU_STAGES = [
  'ceiling',
  'fetch',
  'verified',
  'pipeline',
  'product',
  'threads',
  'shm-read',
  'shm',
  'shm-interleaved',
  'shm-whole',
  'shm-placed',
  'shm-placed-arrival',
  'shm-placed-alongside',
  'placed',
] as const;
const GPU_STAGES = ['gpu-staged', 'gpu', 'engine', 'shm-engine'] as const;
const STAGES = [...CPU_STAGES, ...GPU_STAGES] as const;
type Stage = (typeof STAGES)[number];

interface DeliveryArgs {
  objects: number;
  parallel: number;
  rounds: number;
  codecs: CodecName[];
  stages: Stage[];
  fetchThreads: number;
  shape: { layers: number; kvHeads: number; headDim: number; tokens: number };
  formats: LayerDigestVersion[];
  before: string | undefined;
  placeCostUs: number;
}

function parse(args: string[]): DeliveryArgs {
  const values = parseFlags(args, {
    objects: { type: 'string' },
    parallel: { type: 'string' },
    rounds: { type: 'string' },
    codecs: { type: 'string' },
    stages: { type: 'string' },
    layers: { type: 'string' },
    'kv-heads': { type: 'string' },
    'head-dim': { type: 'string' },
    tokens: { type: 'string' },
    before: { type: 'string' },
    'fetch-threads': { type: 'string' },
    'format-versions': { type: 'string' },
    'place-cost-us': { type: 'string' },
  });
  return {
    objects: positiveInt(values.objects, 16, 'objects'),
    parallel: positiveInt(values.parallel, 16, 'parallel'),
    rounds: positiveInt(values.rounds, 5, 'rounds'),
    codecs: choiceList(values.codecs, CODECS, CODECS, 'codecs'),
    stages: choiceList(values.stages, CPU_STAGES, STAGES, 'stages'),
    fetchThreads: positiveInt(values['fetch-threads'], Math.max(1, defaultFetchThreads()), 'fetch-threads'),
    shape: {
      layers: positiveInt(values.layers, 32, 'layers'),
      kvHeads: positiveInt(values['kv-heads'], 8, 'kv-heads'),
      headDim: positiveInt(values['head-dim'], 128, 'head-dim'),
      tokens: positiveInt(values.tokens, 256, 'tokens'),
    },
    formats: formatVersions(values['format-versions']),
    before: values.before,
    placeCostUs: values['place-cost-us'] === '0' ? 0 : positiveInt(values['place-cost-us'], 0, 'place-cost-us'),
  };
}

/** Stands in for the engine: takes every verified layer as it comes and grows by the chunk's tokens. */
class LayerSink implements InjectTarget {
  length = 0;
  layers = 0;

  async injectKV(object: KVObjectReader, position: number): Promise<void> {
    if (position !== this.length) throw new KdnError('INVALID_ARGUMENT', `sink at ${this.length} asked to inject at ${position}`);
    for await (const block of object.layers) {
      if (block.encoded.length === 0) throw new KdnError('KV_CORRUPT', `layer ${block.layer} is empty`);
      this.layers += 1;
    }
    this.length += object.header.tokens;
  }
}

function devNull(): Writable {
  return new Writable({ write: (_chunk, _encoding, done) => done() });
}

/** Runs `work` over `items` with at most `parallel` in flight. */
async function windowed<T>(items: readonly T[], parallel: number, work: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const lanes = Array.from({ length: Math.min(parallel, items.length) }, async () => {
    while (next < items.length) await work(items[next++]!);
  });
  await Promise.all(lanes);
}

/** The transport's ceiling: plain node:http GETs with the same token the client sends, bodies discarded. */
function plainGet(agent: Agent, edge: RunningEdge, sign: EdgeSigner, key: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const path = kvPath(key);
    const headers = { [EDGE_HEADERS.token]: sign({ method: 'GET', target: path }) };
    const req = request(`${edge.url}${path}`, { agent, headers }, (res) => {
      if (res.statusCode !== 200) reject(new Error(`GET ${key}: HTTP ${res.statusCode}`));
      res.on('data', () => undefined);
      res.once('end', resolve);
      res.once('error', reject);
    });
    req.once('error', reject);
    req.end();
  });
}

interface Fixture {
  codec: CodecName;
  /** KV format version of the objects: it names the layer checksums' hash (storage/kv-object/layer-digest.ts). */
  format: LayerDigestVersion;
  keys: string[];
  objectBytes: number;
  layers: number;
  expect: KVExpectation;
  /** One object's verified layer blocks (every key holds the same object), for the stages without the network. */
  held: { header: KVHeader; blocks: KVLayerBlock[] };
}

interface StageContext {
  client: EdgeClient;
  /** Over sockets only. */
  pool: KvFetchPool;
  /** Reading the edge's shared-memory folder first (the same-host fast path). */
  shmPool: KvFetchPool;
  /**
   * Pools whose workers hold each object's blocks until it is routed to a thread (not delivered eagerly), over the
   * fast path or sockets only, and the thread that places them (each opened on first use).
   */
  routed: {
    pools: Map<string, KvFetchPool>;
    thread?: PlacingThread;
    pool(how: RoutedFetch): KvFetchPool;
    placing(): PlacingThread;
  };
  edge: RunningEdge;
  agent: Agent;
  sign: EdgeSigner;
  parallel: number;
  /** Opened on first use: the injection staging only, and staging with expansion. */
  gpu: { staged?: GpuInjectTarget; expanded?: GpuInjectTarget; open(expand: boolean): Promise<GpuInjectTarget> };
}

/** A reader over blocks already verified and held in memory. */
function heldReader(held: Fixture['held']): KVObjectReader {
  async function* layers(): AsyncGenerator<KVLayerBlock> {
    yield* held.blocks;
  }
  return { header: held.header, layers: layers() };
}

/** Every fixture object requested at once, under one signal as run-query passes it (every request listens on it). */
function fetchAll(fetcher: KvFetcher, f: Fixture, options: KvFetchOptions = {}): ChunkFetch[] {
  const signal = new AbortController().signal;
  setMaxListeners(f.keys.length * 2, signal);
  return f.keys.map((key) => new ChunkFetch(fetcher, key, f.expect, signal, options));
}

/** Throws unless every fetch came from `tier`: a figure from another path would be mislabelled. */
function checkTier(fetches: readonly ChunkFetch[], tier: ChunkTier): void {
  const other = fetches.find((fetch) => fetch.tier !== tier);
  if (other) throw new KdnError('INTERNAL', `a chunk came from tier ${other.tier}, not ${tier}`);
}

/**
 * The product's path: every chunk fetched at once, injected in order (run-query.ts's injectContext without the engine).
 * `tier` (the shm stages): every chunk must have come that way, or the figure would be another path's.
 */
async function injectAll(fetcher: KvFetcher, f: Fixture, sink: InjectTarget, tier?: ChunkTier): Promise<void> {
  const fetches = fetchAll(fetcher, f);
  for (const fetch of fetches) await sink.injectKV(await fetch.reader, sink.length);
  await Promise.all(fetches.map((fetch) => fetch.done));
  if (tier !== undefined) checkTier(fetches, tier);
}

/**
 * Every object fetched at once over the fast path and routed to this thread as kdn routes it to the engine's
 * (routed-stream.ts): each layer comes as where it lies in the edge's file (KVFileBlock), and `target` reads it from
 * there into staging, one object after another.
 */
async function injectRouted(pool: KvFetchPool, f: Fixture, target: GpuInjectTarget): Promise<void> {
  const fetches = fetchAll(pool, f);
  for (const fetch of fetches) {
    const reader = await fetch.reader;
    const { port1, port2 } = new MessageChannel();
    if (!isRoutable(reader) || !reader.route(port2)) throw new KdnError('INTERNAL', 'a fetched object could not be routed');
    const channel = new BlockChannel(reader.header);
    channel.listen(port1);
    try {
      await target.injectKV(channel.reader, target.length);
    } finally {
      channel.close();
    }
  }
  await Promise.all(fetches.map((fetch) => fetch.done));
  checkTier(fetches, 'shm');
}

interface StageResult {
  gbps: number;
  ms: number;
  gpu: GpuInjectTiming | null;
  /** shm-interleaved and shm-whole: from the start until every object's layer 0 was in. */
  layer0Ms: number | null;
}

/**
 * The overlapped path's fetch over the fast path: every object opened at once (`interleave` as kdn sets it), their
 * layers consumed as they come. Returns when every object's layer 0 had come, from `t0`.
 */
async function fetchTogether(fetcher: KvFetcher, f: Fixture, interleave: boolean, t0: number): Promise<number> {
  const fetches = fetchAll(fetcher, f, { interleave });
  const readers = await Promise.all(fetches.map((fetch) => fetch.reader));
  const perLayer = new Array<number>(f.layers).fill(0);
  let layer0Ms = Number.NaN;
  await Promise.all(
    readers.map(async (reader) => {
      for await (const block of reader.layers) {
        if (++perLayer[block.layer]! === f.keys.length && block.layer === 0) layer0Ms = performance.now() - t0;
      }
    }),
  );
  await Promise.all(fetches.map((fetch) => fetch.done));
  if (perLayer.some((n) => n !== f.keys.length)) throw new Error(`layers consumed per index: ${perLayer.join(' ')}`);
  checkTier(fetches, 'shm');
  return layer0Ms;
}

/** How a routed stage's pool fetches: over the fast path or sockets only, verifying layers before or alongside. */
interface RoutedFetch {
  sharedMemory: boolean;
  verifyAlongside: boolean;
}

/**
 * The overlapped path's fetch, every object routed to the placing thread and placed there in `order`. Returns when
 * every object's layer 0 was placed (and verified), from `t0`.
 */
async function placeTogether(ctx: StageContext, f: Fixture, order: PlacingOrder, how: RoutedFetch, t0: number): Promise<number> {
  const { sharedMemory } = how;
  const pool = ctx.routed.pool(how);
  const thread = ctx.routed.placing();
  const fetches = fetchAll(pool, f, { interleave: true });
  const readers = await Promise.all(fetches.map((fetch) => fetch.reader));
  const placed = await thread.place(readers, order);
  await Promise.all(fetches.map((fetch) => fetch.done));
  if (placed.blocks !== f.layers * f.keys.length) throw new Error(`placed ${placed.blocks} blocks of ${f.layers * f.keys.length}`);
  checkTier(fetches, sharedMemory ? 'shm' : 'memory');
  return placed.layer0At - t0;
}

async function measureStage(stage: Stage, f: Fixture, ctx: StageContext): Promise<StageResult> {
  const { client, parallel } = ctx;
  const onGpu = (GPU_STAGES as readonly Stage[]).includes(stage);
  const target = onGpu ? await ctx.gpu.open(stage !== 'gpu-staged') : null;
  let gpu: GpuInjectTiming | null = null;
  let layer0Ms: number | null = null;
  const t0 = performance.now();
  switch (stage) {
    case 'shm-interleaved':
    case 'shm-whole':
      layer0Ms = await fetchTogether(ctx.shmPool, f, stage === 'shm-interleaved', t0);
      break;
    case 'shm-placed':
    case 'shm-placed-arrival':
    case 'shm-placed-alongside': {
      const how = { sharedMemory: true, verifyAlongside: stage === 'shm-placed-alongside' };
      layer0Ms = await placeTogether(ctx, f, stage === 'shm-placed-arrival' ? 'arrival' : 'layer', how, t0);
      break;
    }
    case 'placed':
      layer0Ms = await placeTogether(ctx, f, 'layer', { sharedMemory: false, verifyAlongside: false }, t0);
      break;
    case 'gpu-staged':
    case 'gpu':
      for (const _ of f.keys) await target!.injectKV(heldReader(f.held), target!.length);
      gpu = await target!.finish();
      break;
    case 'engine':
      await injectAll(ctx.pool, f, target!, 'memory');
      gpu = await target!.finish();
      break;
    case 'shm-engine':
      await injectRouted(ctx.routed.pool({ sharedMemory: true, verifyAlongside: false }), f, target!);
      gpu = await target!.finish();
      break;
    case 'shm-read': {
      const dir = ctx.edge.shm!.dir;
      await windowed(f.keys, parallel, async (key) => {
        await readFile(join(dir, shmObjectName(key)));
      });
      break;
    }
    case 'ceiling':
      await windowed(f.keys, parallel, (key) => plainGet(ctx.agent, ctx.edge, ctx.sign, key));
      break;
    case 'fetch':
      await windowed(f.keys, parallel, async (key) => pipeline((await client.get(key)).body, devNull()));
      break;
    case 'verified': {
      const sink = new LayerSink();
      await windowed(f.keys, parallel, async (key) => {
        const reader = await readKVObject((await client.get(key)).body, f.expect);
        await sink.injectKV(reader, sink.length);
      });
      if (sink.layers !== f.keys.length * f.layers) throw new Error(`verified stage consumed ${sink.layers} layers`);
      break;
    }
    case 'pipeline': {
      const sink = new LayerSink();
      await fetchAndInject(inThreadFetcher(client, { sharedMemory: false }), f.keys, sink, parallel);
      if (sink.layers !== f.keys.length * f.layers) throw new Error(`pipeline stage consumed ${sink.layers} layers`);
      break;
    }
    case 'product':
    case 'threads':
    case 'shm': {
      const sink = new LayerSink();
      const fetcher = stage === 'product' ? inThreadFetcher(client, { sharedMemory: false }) : stage === 'threads' ? ctx.pool : ctx.shmPool;
      await injectAll(fetcher, f, sink, stage === 'shm' ? 'shm' : 'memory');
      if (sink.layers !== f.keys.length * f.layers) throw new Error(`${stage} stage consumed ${sink.layers} layers`);
      break;
    }
  }
  const ms = performance.now() - t0;
  return { gbps: (f.objectBytes * f.keys.length) / (ms / 1000) / 1e9, ms, gpu, layer0Ms };
}

/** GB/s per codec and stage of an earlier results file of this benchmark. */
async function readBefore(file: string): Promise<Map<string, number>> {
  const parsed = JSON.parse(await readFile(file, 'utf8')) as { name?: string; records?: BenchRecord[] };
  if (parsed.name !== 'delivery' || !Array.isArray(parsed.records)) {
    throw new KdnError('INVALID_ARGUMENT', `--before ${file} is not a delivery results file`);
  }
  // Records from before format version 2 carry no format: they are all version 1 (sha256).
  return new Map(parsed.records.map((r) => [`${String(r.codec)}/${String(r.format ?? 1)}/${String(r.stage)}`, Number(r.GBps)]));
}

interface Encoded {
  codec: CodecName;
  format: LayerDigestVersion;
  bytes: Buffer;
}

/** One object per codec and format version (every key of a fixture holds the same one). */
function encodeObjects(a: DeliveryArgs): Encoded[] {
  const tensors = kvTensors(a.shape, 42);
  const ids = tokenIds(a.shape.tokens);
  return a.codecs.flatMap((codec) =>
    a.formats.map((format) => ({
      codec,
      format,
      bytes: encodeKVObject(tensors, {
        modelFingerprint: 'bench-delivery',
        tokenIds: ids,
        codec: codecFromString(codec),
        formatVersion: format,
      }),
    })),
  );
}

/** The edge (in process, a memory tier large enough for every object, mirrored in shared memory) and the stages' parts. */
async function openStages(a: DeliveryArgs, encoded: readonly Encoded[], dir: string): Promise<StageContext> {
  const shmDir = existsSync('/dev/shm') ? '/dev/shm' : join(dir, 'shm');
  await mkdir(shmDir, { recursive: true });
  const secret = randomBytes(24).toString('hex');
  const edge = await startEdge(
    {
      port: 0,
      host: '127.0.0.1',
      memoryBytes: Math.ceil(encoded.reduce((sum, { bytes }) => sum + bytes.length * a.objects, 0) * 1.1),
      diskBytes: 0,
      diskPath: join(dir, 'disk'),
      originUrl: `file:${join(dir, 'origin')}`,
      maxBodyBytes: Math.max(...encoded.map(({ bytes }) => bytes.length)),
      secret,
      shmDir,
    },
    { log: pino({ name: 'bench-edge', level: process.env.LOG_LEVEL ?? 'warn' }, pino.destination(2)) },
  );
  const clientOptions = { edges: [edge.url], timeoutMs: 60_000, maxSockets: 64, secret };
  const capacity = a.objects * a.shape.tokens;
  return {
    client: new EdgeClient(clientOptions),
    // Every stage reads the pools' objects on this event loop, as an engine on it does (kdn's deliverEagerly case).
    pool: new KvFetchPool(clientOptions, a.fetchThreads, { sharedMemory: false, deliverEagerly: true }),
    shmPool: new KvFetchPool(clientOptions, a.fetchThreads, { sharedMemory: true, deliverEagerly: true }),
    routed: {
      pools: new Map(),
      pool(how) {
        const key = `${how.sharedMemory} ${how.verifyAlongside}`;
        let pool = this.pools.get(key);
        if (pool === undefined) this.pools.set(key, (pool = new KvFetchPool(clientOptions, a.fetchThreads, how)));
        return pool;
      },
      placing() {
        return (this.thread ??= new PlacingThread(a.placeCostUs));
      },
    },
    edge,
    agent: new Agent({ keepAlive: true, maxSockets: 64 }),
    sign: secretSigner(secret),
    parallel: a.parallel,
    gpu: {
      async open(expand) {
        if (expand) return (this.expanded ??= await GpuInjectTarget.open(a.shape, capacity, true));
        return (this.staged ??= await GpuInjectTarget.open(a.shape, capacity, false));
      },
    },
  };
}

async function closeStages(ctx: StageContext): Promise<void> {
  await ctx.gpu.staged?.close();
  await ctx.gpu.expanded?.close();
  ctx.agent.destroy();
  ctx.client.close();
  await ctx.pool.close();
  await ctx.shmPool.close();
  for (const pool of ctx.routed.pools.values()) await pool.close();
  await ctx.routed.thread?.close();
  await ctx.edge.close();
}

/** Puts each object under --objects keys at the edge (and its shared-memory mirror), and holds its verified layers. */
async function putFixtures(a: DeliveryArgs, encoded: readonly Encoded[], ctx: StageContext): Promise<Fixture[]> {
  const fixtures: Fixture[] = [];
  const expect = { modelFingerprint: 'bench-delivery', ...a.shape, tokenHash: tokenHash(tokenIds(a.shape.tokens)) };
  for (const { codec, format, bytes } of encoded) {
    const keys = Array.from(
      { length: a.objects },
      (_, i) => `kv/bench/delivery/${codec}/v${format}/chunk-${String(i).padStart(4, '0')}.kv`,
    );
    for (const key of keys) await ctx.client.put(key, bytes);
    await ctx.edge.shm!.settled();
    const reader = await readKVObject(Readable.from([bytes]), expect);
    const blocks: KVLayerBlock[] = [];
    for await (const block of reader.layers) blocks.push(block);
    fixtures.push({
      codec,
      format,
      keys,
      objectBytes: bytes.length,
      layers: a.shape.layers,
      expect,
      held: { header: reader.header, blocks },
    });
  }
  return fixtures;
}

const sampleKey = (f: Fixture, stage: Stage): string => `${f.codec}/${f.format}/${stage}`;

/** Every stage of every fixture once per round, stages interleaved; the first round is a warmup. */
async function measureRounds(a: DeliveryArgs, fixtures: readonly Fixture[], ctx: StageContext): Promise<Map<string, StageResult[]>> {
  const samples = new Map<string, StageResult[]>();
  for (let r = 0; r <= a.rounds; r++) {
    for (const f of fixtures) {
      for (const stage of a.stages) {
        const result = await measureStage(stage, f, ctx);
        if (r === 0) continue; // warmup: sockets open, JIT warm
        samples.set(sampleKey(f, stage), [...(samples.get(sampleKey(f, stage)) ?? []), result]);
      }
    }
    if (r > 0) process.stderr.write(`delivery: round ${r}/${a.rounds} done\n`);
  }
  return samples;
}

/** One record per fixture and stage: medians over the rounds, and each round's GB/s. */
function toRecords(
  a: DeliveryArgs,
  fixtures: readonly Fixture[],
  samples: Map<string, StageResult[]>,
  before: Map<string, number> | undefined,
): BenchRecord[] {
  return fixtures.flatMap((f) => {
    const ceilingRounds = samples.get(sampleKey(f, 'ceiling'))?.map((s) => s.gbps);
    return a.stages.map((stage) => {
      const results = samples.get(sampleKey(f, stage))!;
      const rounds = results.map((s) => s.gbps);
      const gbps = median(rounds);
      const gpuTimes = results.flatMap((s) => (s.gpu ? [s.gpu] : []));
      const was = before?.get(sampleKey(f, stage));
      return {
        codec: f.codec,
        format: f.format,
        stage,
        objectMB: round(f.objectBytes / 1e6),
        GBps: round(gbps, 3),
        ofCeiling: ceilingRounds ? round(gbps / median(ceilingRounds), 3) : null,
        ms: round(median(results.map((s) => s.ms))),
        hostWriteMs: gpuTimes.length > 0 ? round(median(gpuTimes.map((t) => t.hostWriteMs))) : null,
        gpuWaitMs: gpuTimes.length > 0 ? round(median(gpuTimes.map((t) => t.settleMs))) : null,
        readBlocks: gpuTimes.length > 0 ? median(gpuTimes.map((t) => t.readBlocks)) : null,
        layer0Ms: results[0]!.layer0Ms === null ? null : round(median(results.map((s) => s.layer0Ms!))),
        ...(before
          ? { beforeGBps: was === undefined ? null : round(was, 3), speedup: was === undefined ? null : round(gbps / was, 3) }
          : {}),
        rounds: rounds.map((v) => round(v, 3)).join(' '),
      };
    });
  });
}

export async function run(args: string[]): Promise<BenchReport> {
  const a = parse(args);
  const before = a.before === undefined ? undefined : await readBefore(a.before);
  const encoded = encodeObjects(a);
  const dir = await mkdtemp(join(tmpdir(), 'kdn-bench-delivery-'));
  try {
    const ctx = await openStages(a, encoded, dir);
    try {
      const fixtures = await putFixtures(a, encoded, ctx);
      const records = toRecords(a, fixtures, await measureRounds(a, fixtures, ctx), before);
      return {
        params: {
          objects: a.objects,
          parallel: a.parallel,
          fetchThreads: a.fetchThreads,
          rounds: a.rounds,
          shape: `${a.shape.layers} layers x ${a.shape.kvHeads} kv heads x ${a.shape.headDim} head dim x ${a.shape.tokens} tokens`,
          edge: 'in process, memory tier, signed requests, loopback HTTP (same event loop as the client); shm stages: its tmpfs mirror',
          timing:
            'GB/s (and ms) of stored object bytes from the first request to the last layer consumed, median over rounds after one ' +
            'warmup round; gpu stages: hostWriteMs inside the injector writes, gpuWaitMs from the last write to the GPU done, ' +
            'readBlocks the blocks read from their file into staging (not copied)',
          ...(a.before ? { before: a.before } : {}),
          ...(a.placeCostUs > 0 ? { placeCostUs: a.placeCostUs } : {}),
        },
        records,
      };
    } finally {
      await closeStages(ctx);
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
