/**
 * The WebGPU ForwardBackend: weights uploaded once (f16-packed where the adapter has shader-f16, i.e. a real GPU;
 * f32 otherwise, or as asked), a KV cache per session in GPU buffers, and forward passes recorded chunk by chunk
 * into one submission each (a few layers at a time while the context is still arriving), reading back only the logits
 * asked for.
 */
import { KdnError } from '../../common/errors.ts';
import { codecFor } from '../../storage/kv-object/index.ts';
import type { TransformTable } from '../../storage/kv-object/codecs/transform-table.ts';
import type { KVHeader, KVBlock, KVTensors } from '../../storage/kv-object/types.ts';
import {
  checkedBatch,
  type BatchSequence,
  type BlendOutput,
  type BlendPlan,
  type ForwardBackend,
  type KVCacheHandle,
  type KVRows,
} from '../backend.ts';
import type { ModelConfig } from '../model/config.ts';
import type { ModelWeights } from '../model/weights.ts';
import { gpuBatchForward, type GpuBatchSequence } from './batch-forward.ts';
import { GpuBlendForward } from './blend-forward.ts';
import { openDevice, withErrorScopes } from './device.ts';
import { ForwardScratch } from './forward-scratch.ts';
import { GpuContext, type Recorder } from './gpu-context.ts';
import { GpuKVCache, type KVCacheOwner } from './gpu-kv-cache.ts';
import { KvBufferPool } from './kv-buffer-pool.ts';
import type { KvWriteWork } from '../engine-work.ts';
import { BlockFiles } from './block-files.ts';
import { KvInjector } from './kv-injector.ts';
import { GPU_EXPANDERS } from './gpu-expanders.ts';
import { GpuTransformTables } from './gpu-transform-tables.ts';
import { GpuKVRows } from './gpu-kv-rows.ts';
import { layerExpander, type LayerWrite } from './kv-layer-expander.ts';
import { uploadWeights, type GpuModelWeights, type WeightPrecision } from './gpu-weights.ts';
import type { LayerGate } from '../layer-gates.ts';
import { recordEmbeddingStep, recordForwardChunk, recordLayer, recordLogits, type ChunkArgs, type ForwardParts } from './record-forward.ts';
import { ScopedSubmissions } from './scoped-submissions.ts';

export { probeWebGPU } from './device.ts';

export interface WebGPUBackendOptions {
  /** Largest KV capacity a session may ask for (checked against the adapter's buffer limits at start-up). */
  capacity?: number;
  /** Weight storage; default f16 when the adapter has shader-f16, else f32. */
  weights?: WeightPrecision;
  /** Prefill runs in chunks of at most this many tokens (bounds activation memory); default 4096. */
  maxChunkTokens?: number;
}

/**
 * The tensor-core matmul runs 4096-row chunks 2.6x more efficiently than 1024-row ones (8B shape, H200); the
 * activations of such a chunk are about 0.6 GB for the 8B shape.
 */
const DEFAULT_CHUNK_TOKENS = 4096;

export async function createWebGPUBackend(weights: ModelWeights, options: WebGPUBackendOptions = {}): Promise<ForwardBackend> {
  const ctx = new GpuContext(await openDevice());
  try {
    return await WebGpuBackend.start(ctx, weights, options);
  } catch (err) {
    await ctx.dispose();
    throw err;
  }
}

/** What a started backend holds on the device. */
interface DeviceParts {
  gpuWeights: GpuModelWeights;
  precision: WeightPrecision;
  scratch: ForwardScratch;
  tables: GpuTransformTables;
  injector: KvInjector<LayerWrite>;
  pool: KvBufferPool;
}

export class WebGpuBackend implements ForwardBackend {
  readonly name = 'webgpu';
  readonly device: string;
  private readonly c: ModelConfig;
  private readonly tokenStride: number;
  private readonly cacheOwner: KVCacheOwner;
  private lostReason: string | null = null;
  private disposed = false;

  /** Uploads the weights and builds the device-side parts; the caller disposes `ctx` if this throws. */
  static async start(ctx: GpuContext, weights: ModelWeights, options: WebGPUBackendOptions): Promise<WebGpuBackend> {
    const c = weights.config;
    const chunkTokens = options.maxChunkTokens ?? DEFAULT_CHUNK_TOKENS;
    if (!Number.isInteger(chunkTokens) || chunkTokens < 1) {
      throw new KdnError('INVALID_ARGUMENT', `maxChunkTokens must be a positive integer, got ${chunkTokens}.`);
    }
    // Before any weights are uploaded.
    if (options.capacity !== undefined) GpuKVCache.checkCapacity(ctx, options.capacity, c.kvHeads * c.headDim);
    const precision = options.weights ?? (ctx.features.shaderF16 ? 'f16' : 'f32');
    const gpuWeights = await withErrorScopes(ctx.device, 'weight upload', () => uploadWeights(ctx, weights, precision));
    const tables = new GpuTransformTables(ctx);
    const parts: DeviceParts = {
      gpuWeights,
      precision,
      scratch: new ForwardScratch(ctx, c),
      tables,
      injector: new KvInjector<LayerWrite>(ctx, layerExpander({ ctx, tables }, gpuWeights.invFreq, c), { files: new BlockFiles() }),
      pool: new KvBufferPool(ctx),
    };
    return new WebGpuBackend(ctx, c, parts, chunkTokens, options.capacity ?? Infinity);
  }

  private constructor(
    private readonly ctx: GpuContext,
    config: ModelConfig,
    private readonly parts: DeviceParts,
    private readonly chunkTokens: number,
    private readonly maxCapacity: number,
  ) {
    this.c = config;
    this.tokenStride = config.kvHeads * config.headDim;
    this.cacheOwner = { pool: parts.pool, whenSubmitted: (release) => parts.injector.whenSubmitted(release) };
    // Tensor cores take f16-weight products and prefill attention with f16 inputs (f32 accumulation).
    const tensorCores = ctx.features.subgroupMatrix && parts.precision === 'f16' ? ', tensor cores' : '';
    this.device = `${ctx.description}, ${parts.precision} weights${tensorCores}`;
    void ctx.device.lost.then((info) => {
      this.lostReason = info.message || info.reason;
    });
  }

  createKVCache(capacity: number): KVCacheHandle {
    this.alive();
    if (!Number.isInteger(capacity) || capacity < 1)
      throw new KdnError('INVALID_ARGUMENT', `KV capacity must be a positive integer, got ${capacity}`);
    if (capacity > this.maxCapacity)
      throw new KdnError('CONTEXT_TOO_LONG', `KV capacity ${capacity} exceeds this engine's ${this.maxCapacity}`);
    return new GpuKVCache(this.ctx, capacity, this.c.layers, this.tokenStride, this.cacheOwner);
  }

  async forward(
    handle: KVCacheHandle,
    tokens: Uint32Array,
    position: number,
    logits: 'last' | 'all' | 'none',
    gate?: LayerGate,
  ): Promise<Float32Array> {
    return this.timed(gate, () => this.forwardNow(handle, tokens, position, logits, gate));
  }

  /**
   * Runs a gated forward; when its gate carries a timeline, the injector records its sends there meanwhile: they are
   * the ones placing the forward's context (or, with calls interleaved, another's at the same time).
   */
  private async timed<T>(gate: LayerGate | undefined, run: () => Promise<T>): Promise<T> {
    const timeline = gate?.timeline;
    if (timeline === undefined) return run();
    const injector = this.parts.injector;
    injector.timeline = timeline;
    try {
      return await run();
    } finally {
      if (injector.timeline === timeline) injector.timeline = null;
    }
  }

  private async forwardNow(
    handle: KVCacheHandle,
    tokens: Uint32Array,
    position: number,
    logits: 'last' | 'all' | 'none',
    gate?: LayerGate,
  ): Promise<Float32Array> {
    this.alive();
    const cache = this.own(handle);
    this.checkTokens(cache, tokens, position);
    if (tokens.length === 0) {
      if (logits === 'none') return new Float32Array(0);
      throw new KdnError('INVALID_ARGUMENT', 'forward() needs at least one token to return logits');
    }
    await this.parts.injector.settle();
    const { ctx, c, parts } = this;
    const outs: Float32Array[] = [];
    const f: ForwardParts = { ctx, config: c, w: parts.gpuWeights, s: parts.scratch, cache };
    // Every row's logits must fit one storage binding.
    const step =
      logits === 'all' ? Math.max(1, Math.min(this.chunkTokens, Math.floor(ctx.maxStorageBytes / (c.vocabSize * 4)))) : this.chunkTokens;
    for (let start = 0; start < tokens.length; start += step) {
      const n = Math.min(step, tokens.length - start);
      const isLast = start + n === tokens.length;
      const a: ChunkArgs = {
        tokens: n,
        position: position + start,
        logits: logits === 'all' ? 'all' : logits === 'last' && isLast ? 'last' : 'none',
      };
      const prepare = (rec: Recorder): void => {
        cache.reserve(a.position + n, () => rec);
        parts.scratch.ensure(n, a.logits === 'all' ? n : 1);
        ctx.device.queue.writeBuffer(parts.scratch.ids, 0, tokens, start, n);
      };
      // Only the first chunk waits for the context: the chunks after it start once it ran every layer.
      const result = start === 0 && gate ? await this.forwardGated(f, a, prepare, gate) : await this.forwardChunk(f, a, prepare);
      if (result !== null) outs.push(new Float32Array(result));
    }
    return concat(outs);
  }

  async batchForward(sequences: readonly BatchSequence[]): Promise<Float32Array[]> {
    this.alive();
    const checked: GpuBatchSequence[] = checkedBatch(
      sequences,
      (cache) => this.own(cache),
      (cache, tokens, position) => this.checkTokens(cache, tokens, position),
    );
    await this.parts.injector.settle();
    const parts = { ctx: this.ctx, config: this.c, w: this.parts.gpuWeights, s: this.parts.scratch };
    const out: Float32Array[] = [];
    // Groups of at most chunkTokens rows bound the activations; a sequence longer than that runs alone, chunked.
    for (let i = 0; i < checked.length; ) {
      const seq = checked[i]!;
      if (seq.tokens.length > this.chunkTokens) {
        out.push(await this.forward(seq.cache, seq.tokens, seq.position, 'last'));
        i++;
        continue;
      }
      let rows = 0;
      let j = i;
      while (j < checked.length && rows + checked[j]!.tokens.length <= this.chunkTokens) rows += checked[j++]!.tokens.length;
      const group = checked.slice(i, j);
      const pending = await withErrorScopes(this.ctx.device, 'batched forward', () => ({ done: gpuBatchForward(parts, group) }));
      out.push(...(await pending.done));
      i = j;
    }
    return out;
  }

  async blendForward(
    handle: KVCacheHandle,
    tokens: Uint32Array,
    position: number,
    plan: BlendPlan,
    logits: 'last' | 'none',
    gate?: LayerGate,
  ): Promise<BlendOutput> {
    this.alive();
    const cache = this.own(handle);
    this.checkTokens(cache, tokens, position);
    if (tokens.length === 0) throw new KdnError('INVALID_ARGUMENT', 'blendForward() needs at least one token');
    await this.parts.injector.settle();
    const f: ForwardParts = { ctx: this.ctx, config: this.c, w: this.parts.gpuWeights, s: this.parts.scratch, cache };
    return this.timed(gate, () => new GpuBlendForward(f, this.chunkTokens).run(tokens, position, plan, logits, gate));
  }

  async readKV(handle: KVCacheHandle, start: number, end: number): Promise<KVTensors> {
    this.alive();
    const cache = this.own(handle);
    this.checkRange(cache, start, end);
    const { c, tokenStride } = this;
    const tokens = end - start;
    const result: KVTensors = {
      layers: c.layers,
      kvHeads: c.kvHeads,
      headDim: c.headDim,
      tokens,
      positionBase: start,
      ropeApplied: true,
      perLayer: [],
    };
    if (tokens === 0) {
      result.perLayer = Array.from({ length: c.layers }, () => ({ keys: new Float32Array(0), values: new Float32Array(0) }));
      return result;
    }
    await this.parts.injector.settle();
    const bytes = tokens * tokenStride * 4;
    const done = await withErrorScopes(this.ctx.device, 'KV readback', () => {
      const rec = this.ctx.recorder();
      cache.reserve(end, () => rec);
      for (let l = 0; l < c.layers; l++) {
        for (const range of [cache.keys[l]!, cache.values[l]!]) rec.readback(range.buffer, range.offset + start * tokenStride * 4, bytes);
      }
      return rec.submit();
    });
    const buffers = await done;
    for (let l = 0; l < c.layers; l++) {
      result.perLayer.push({ keys: new Float32Array(buffers[2 * l]!), values: new Float32Array(buffers[2 * l + 1]!) });
    }
    return result;
  }

  async writeKVLayer(handle: KVCacheHandle, header: KVHeader, block: KVBlock, position: number): Promise<void> {
    this.alive();
    const cache = this.own(handle);
    const { c } = this;
    if (block.layer < 0 || block.layer >= c.layers)
      throw new KdnError('KV_MISMATCH', `KV layer ${block.layer} does not exist in a ${c.layers}-layer model`);
    if (header.kvHeads !== c.kvHeads || header.headDim !== c.headDim) {
      throw new KdnError(
        'KV_MISMATCH',
        `KV object has ${header.kvHeads} KV heads of ${header.headDim}, the model ${c.kvHeads} of ${c.headDim}`,
      );
    }
    this.checkRange(cache, position, position + header.tokens);
    const expected = codecFor(header.codec).expectedSize({ tokens: header.tokens, kvHeads: c.kvHeads, headDim: c.headDim }, block.layer);
    const length = block.encoded === undefined ? block.source.length : block.encoded.length;
    if (length !== expected) {
      throw new KdnError(
        'KV_CORRUPT',
        `KV layer ${block.layer} block is ${length} bytes, the ${header.codec.name} codec expects ${expected}`,
      );
    }
    if (header.tokens === 0) return;
    const { injector, tables } = this.parts;
    GPU_EXPANDERS[header.codec.name].check({ ctx: this.ctx, tables }, header.codec);
    // Growing copies go into the batch first, so they land before the expanded rows.
    cache.reserve(position + header.tokens, () => injector.recorder());
    // The encoded bytes go up in one write and are expanded on the GPU: no host decode.
    await injector.writeBlock(block, { cache, layer: block.layer, header, position });
  }

  useTransformTable(table: TransformTable): void {
    this.alive();
    this.parts.tables.use(table);
  }

  async saveKVRows(handle: KVCacheHandle, start: number, end: number): Promise<KVRows> {
    this.alive();
    const cache = this.own(handle);
    this.checkRange(cache, start, end);
    return GpuKVRows.save(this.ctx, this.parts.injector, cache, start, end);
  }

  async loadKVRows(handle: KVCacheHandle, rows: KVRows, position: number): Promise<void> {
    this.alive();
    const cache = this.own(handle);
    if (!(rows instanceof GpuKVRows)) throw new KdnError('INTERNAL', 'saved KV rows do not belong to the webgpu backend');
    this.checkRange(cache, position, position + rows.tokens);
    rows.load(this.ctx, this.parts.injector, this.parts.gpuWeights.invFreq, cache, position, this.c);
  }

  async reserveKV(handle: KVCacheHandle, tokens: number): Promise<void> {
    this.alive();
    const cache = this.own(handle);
    this.checkRange(cache, 0, tokens);
    // Through the injection batch, so the growth lands before rows injected after it. Not settled here: a fresh
    // session's reserve records no GPU work at all, and a growth copy's errors surface at the next settle.
    cache.reserve(tokens, () => this.parts.injector.recorder());
  }

  async settleKVWrites(handle: KVCacheHandle): Promise<void> {
    this.alive();
    this.own(handle);
    await this.parts.injector.settle();
  }

  flushKVWrites(handle: KVCacheHandle): Promise<void> {
    this.alive();
    this.own(handle);
    return this.parts.injector.flush();
  }

  kvWrites(): KvWriteWork {
    return this.parts.injector.work();
  }

  async dispose(): Promise<void> {
    if (this.disposed) return;
    this.disposed = true;
    const { injector, tables, pool, scratch, gpuWeights } = this.parts;
    await injector.destroy();
    tables.destroy();
    pool.destroy();
    scratch.destroy();
    gpuWeights.destroy();
    await this.ctx.dispose();
  }

  /** One chunk recorded whole into one submission; resolves with its logits' bytes (null for 'none'). */
  private async forwardChunk(f: ForwardParts, a: ChunkArgs, prepare: (rec: Recorder) => void): Promise<ArrayBuffer | null> {
    const pending = await withErrorScopes(this.ctx.device, 'forward', () => {
      const rec = this.ctx.recorder();
      prepare(rec);
      const index = recordForwardChunk(rec, f, a);
      return { index, done: rec.submit() };
    });
    const results = await pending.done;
    return pending.index === null ? null : results[pending.index]!;
  }

  /**
   * One chunk submitted in pieces, each the layers a gate opened (gate(l) says how many lead up to where the piece
   * ends), while the pieces before it run. A layer is recorded only after its gate: recorded commands name the
   * scratch buffers of the moment, which other work could replace during the wait. The error scopes are awaited at
   * the end, so the GPU never waits on the host between layers whose context is in place.
   */
  private async forwardGated(
    f: ForwardParts,
    a: ChunkArgs,
    prepare: (rec: Recorder) => void,
    gate: LayerGate,
  ): Promise<ArrayBuffer | null> {
    const pieces = new ScopedSubmissions(this.ctx);
    const layers = this.c.layers;
    try {
      pieces.launch((rec) => {
        prepare(rec);
        recordEmbeddingStep(rec, f, a);
      });
      let index: number | null = null;
      let last: Promise<ArrayBuffer[]> = Promise.resolve([]);
      for (let from = 0; from < layers; ) {
        const to = await gate(from);
        last = pieces.launch((rec) => {
          for (let l = from; l < to; l++) recordLayer(rec, f, a, l);
          if (to === layers) index = recordLogits(rec, f, a);
        });
        gate.timeline?.piece(from, to, this.ctx.device.queue.onSubmittedWorkDone());
        from = to;
      }
      const results = await last;
      await pieces.settle();
      return index === null ? null : results[index]!;
    } catch (err) {
      // A device error outranks the gate's: it says why everything after it failed.
      await pieces.settle();
      throw err;
    }
  }

  private alive(): void {
    if (this.disposed) throw new KdnError('ENGINE_UNAVAILABLE', 'The WebGPU backend was disposed.');
    if (this.lostReason !== null)
      throw new KdnError('ENGINE_UNAVAILABLE', `The WebGPU device was lost: ${this.lostReason}`, { hint: 'Restart the engine.' });
  }

  private own(cache: KVCacheHandle): GpuKVCache {
    if (!(cache instanceof GpuKVCache)) throw new KdnError('INTERNAL', 'KV cache handle does not belong to the webgpu backend');
    if (cache.isDisposed) throw new KdnError('INVALID_ARGUMENT', 'The KV cache was disposed.');
    return cache;
  }

  private checkRange(cache: GpuKVCache, start: number, end: number): void {
    if (!Number.isInteger(start) || !Number.isInteger(end) || start < 0 || end < start) {
      throw new KdnError('INVALID_ARGUMENT', `KV range [${start}, ${end}) is not a valid token range`);
    }
    if (end > cache.capacity) {
      throw new KdnError('CONTEXT_TOO_LONG', `Token range [${start}, ${end}) exceeds the session's capacity of ${cache.capacity} tokens`);
    }
  }

  /** The rows' range fits the cache and every id is in the vocabulary. */
  private checkTokens(cache: GpuKVCache, tokens: Uint32Array, position: number): void {
    this.checkRange(cache, position, position + tokens.length);
    for (const id of tokens) {
      if (id >= this.c.vocabSize) throw new KdnError('INVALID_ARGUMENT', `token id ${id} outside vocabulary [0, ${this.c.vocabSize})`);
    }
  }
}

function concat(parts: Float32Array[]): Float32Array {
  if (parts.length === 1) return parts[0]!;
  const out = new Float32Array(parts.reduce((sum, p) => sum + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}
