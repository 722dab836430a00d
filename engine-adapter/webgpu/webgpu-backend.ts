/**
 * The WebGPU ForwardBackend: weights uploaded once (f16-packed where the adapter has shader-f16, i.e. a real GPU;
 * f32 otherwise, or as asked), a KV cache per session in GPU buffers, and forward passes recorded chunk by chunk
 * into one submission each (a layer at a time while the context is still arriving), reading back only the logits
 * asked for.
 */
import { KdnError } from '../../common/errors.ts';
import { codecFor } from '../../storage/kv-object/index.ts';
import type { KVHeader, KVLayerBlock, KVTensors } from '../../storage/kv-object/types.ts';
import type { ForwardBackend, KVCacheHandle } from '../backend.ts';
import type { ModelWeights } from '../model/weights.ts';
import { GpuBlendForward } from './blend-forward.ts';
import { openDevice, withErrorScopes } from './device.ts';
import { ForwardScratch } from './forward-scratch.ts';
import { GpuContext, type Recorder } from './gpu-context.ts';
import { GpuKVCache } from './gpu-kv-cache.ts';
import { KvBufferPool } from './kv-buffer-pool.ts';
import { KvInjector } from './kv-injector.ts';
import { GPU_EXPANDERS } from './gpu-expanders.ts';
import { GpuTransformTables } from './gpu-transform-tables.ts';
import { GpuKVRows } from './gpu-kv-rows.ts';
import { layerExpander, type LayerWrite } from './kv-layer-expander.ts';
import { uploadWeights, type WeightPrecision } from './gpu-weights.ts';
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
    return await startBackend(ctx, weights, options);
  } catch (err) {
    ctx.dispose();
    throw err;
  }
}

async function startBackend(ctx: GpuContext, weights: ModelWeights, options: WebGPUBackendOptions): Promise<ForwardBackend> {
  const c = weights.config;
  const tokenStride = c.kvHeads * c.headDim;
  const chunkTokens = options.maxChunkTokens ?? DEFAULT_CHUNK_TOKENS;
  if (!Number.isInteger(chunkTokens) || chunkTokens < 1) throw new KdnError('INVALID_ARGUMENT', `maxChunkTokens must be a positive integer, got ${chunkTokens}.`);
  const maxCapacity = options.capacity ?? Infinity;
  // Before any weights are uploaded.
  if (options.capacity !== undefined) GpuKVCache.checkCapacity(ctx, options.capacity, tokenStride);

  const precision = options.weights ?? (ctx.features.shaderF16 ? 'f16' : 'f32');
  const gpuWeights = await withErrorScopes(ctx.device, 'weight upload', () => uploadWeights(ctx, weights, precision));
  const scratch = new ForwardScratch(ctx, c);
  const tables = new GpuTransformTables(ctx);
  const expandEnv = { ctx, tables };
  const injector = new KvInjector<LayerWrite>(ctx, layerExpander(expandEnv, gpuWeights.invFreq, c));
  const pool = new KvBufferPool(ctx);
  const cacheOwner = { pool, beforeDispose: () => injector.flush() };
  let lostReason: string | null = null;
  let disposed = false;
  void ctx.device.lost.then((info) => {
    lostReason = info.message || info.reason;
  });

  const alive = (): void => {
    if (disposed) throw new KdnError('ENGINE_UNAVAILABLE', 'The WebGPU backend was disposed.');
    if (lostReason !== null) throw new KdnError('ENGINE_UNAVAILABLE', `The WebGPU device was lost: ${lostReason}`, { hint: 'Restart the engine.' });
  };
  const own = (cache: KVCacheHandle): GpuKVCache => {
    if (!(cache instanceof GpuKVCache)) throw new KdnError('INTERNAL', 'KV cache handle does not belong to the webgpu backend');
    if (cache.isDisposed) throw new KdnError('INVALID_ARGUMENT', 'The KV cache was disposed.');
    return cache;
  };
  const checkRange = (cache: GpuKVCache, start: number, end: number): void => {
    if (!Number.isInteger(start) || !Number.isInteger(end) || start < 0 || end < start) {
      throw new KdnError('INVALID_ARGUMENT', `KV range [${start}, ${end}) is not a valid token range`);
    }
    if (end > cache.capacity) {
      throw new KdnError('CONTEXT_TOO_LONG', `Token range [${start}, ${end}) exceeds the session's capacity of ${cache.capacity} tokens`);
    }
  };

  /** One chunk recorded whole into one submission; resolves with its logits' bytes (null for 'none'). */
  const forwardChunk = async (f: ForwardParts, a: ChunkArgs, prepare: (rec: Recorder) => void): Promise<ArrayBuffer | null> => {
    const pending = await withErrorScopes(ctx.device, 'forward', () => {
      const rec = ctx.recorder();
      prepare(rec);
      const index = recordForwardChunk(rec, f, a);
      return { index, done: rec.submit() };
    });
    const results = await pending.done;
    return pending.index === null ? null : results[pending.index]!;
  };

  /**
   * One chunk submitted a layer at a time, each once gate(layer) opened, while the layers before it run. A layer is
   * recorded only after its gate: recorded commands name the scratch buffers of the moment, which other work could
   * replace during the wait. The error scopes are awaited at the end, so the GPU never waits on the host between
   * layers whose context is in place.
   */
  const forwardGated = async (f: ForwardParts, a: ChunkArgs, prepare: (rec: Recorder) => void, gate: LayerGate): Promise<ArrayBuffer | null> => {
    const pieces = new ScopedSubmissions(ctx);
    try {
      pieces.launch((rec) => {
        prepare(rec);
        recordEmbeddingStep(rec, f, a);
      });
      let index: number | null = null;
      let last: Promise<ArrayBuffer[]> = Promise.resolve([]);
      for (let l = 0; l < c.layers; l++) {
        await gate(l);
        last = pieces.launch((rec) => {
          recordLayer(rec, f, a, l);
          if (l === c.layers - 1) index = recordLogits(rec, f, a);
        });
      }
      const results = await last;
      await pieces.settle();
      return index === null ? null : results[index]!;
    } catch (err) {
      // A device error outranks the gate's: it says why everything after it failed.
      await pieces.settle();
      throw err;
    }
  };

  return {
    name: 'webgpu',
    // Tensor cores take f16-weight products and prefill attention with f16 inputs (f32 accumulation).
    device: `${ctx.description}, ${precision} weights${ctx.features.subgroupMatrix && precision === 'f16' ? ', tensor cores' : ''}`,

    createKVCache(capacity: number): KVCacheHandle {
      alive();
      if (!Number.isInteger(capacity) || capacity < 1) throw new KdnError('INVALID_ARGUMENT', `KV capacity must be a positive integer, got ${capacity}`);
      if (capacity > maxCapacity) throw new KdnError('CONTEXT_TOO_LONG', `KV capacity ${capacity} exceeds this engine's ${maxCapacity}`);
      return new GpuKVCache(ctx, capacity, c.layers, tokenStride, cacheOwner);
    },

    async forward(handle, tokens, position, logits, gate) {
      alive();
      const cache = own(handle);
      checkRange(cache, position, position + tokens.length);
      if (tokens.length === 0) {
        if (logits === 'none') return new Float32Array(0);
        throw new KdnError('INVALID_ARGUMENT', 'forward() needs at least one token to return logits');
      }
      for (const id of tokens) {
        if (id >= c.vocabSize) throw new KdnError('INVALID_ARGUMENT', `token id ${id} outside vocabulary [0, ${c.vocabSize})`);
      }
      await injector.settle();
      const parts: Float32Array[] = [];
      const f: ForwardParts = { ctx, config: c, w: gpuWeights, s: scratch, cache };
      // Every row's logits must fit one storage binding.
      const step = logits === 'all' ? Math.max(1, Math.min(chunkTokens, Math.floor(ctx.maxStorageBytes / (c.vocabSize * 4)))) : chunkTokens;
      for (let start = 0; start < tokens.length; start += step) {
        const n = Math.min(step, tokens.length - start);
        const isLast = start + n === tokens.length;
        const a: ChunkArgs = { tokens: n, position: position + start, logits: logits === 'all' ? 'all' : logits === 'last' && isLast ? 'last' : 'none' };
        const prepare = (rec: Recorder): void => {
          cache.reserve(a.position + n, () => rec);
          scratch.ensure(n, a.logits === 'all' ? n : 1);
          ctx.device.queue.writeBuffer(scratch.ids, 0, tokens, start, n);
        };
        // Only the first chunk waits for the context: the chunks after it start once it ran every layer.
        const result = start === 0 && gate ? await forwardGated(f, a, prepare, gate) : await forwardChunk(f, a, prepare);
        if (result !== null) parts.push(new Float32Array(result));
      }
      if (parts.length === 1) return parts[0]!;
      const out = new Float32Array(parts.reduce((sum, p) => sum + p.length, 0));
      let at = 0;
      for (const p of parts) {
        out.set(p, at);
        at += p.length;
      }
      return out;
    },

    async blendForward(handle, tokens, position, plan, logits, gate) {
      alive();
      const cache = own(handle);
      checkRange(cache, position, position + tokens.length);
      if (tokens.length === 0) throw new KdnError('INVALID_ARGUMENT', 'blendForward() needs at least one token');
      for (const id of tokens) {
        if (id >= c.vocabSize) throw new KdnError('INVALID_ARGUMENT', `token id ${id} outside vocabulary [0, ${c.vocabSize})`);
      }
      await injector.settle();
      const f: ForwardParts = { ctx, config: c, w: gpuWeights, s: scratch, cache };
      return new GpuBlendForward(f, chunkTokens).run(tokens, position, plan, logits, gate);
    },

    async readKV(handle, start, end): Promise<KVTensors> {
      alive();
      const cache = own(handle);
      checkRange(cache, start, end);
      const tokens = end - start;
      const bytes = tokens * tokenStride * 4;
      const result: KVTensors = { layers: c.layers, kvHeads: c.kvHeads, headDim: c.headDim, tokens, positionBase: start, ropeApplied: true, perLayer: [] };
      if (tokens === 0) {
        result.perLayer = Array.from({ length: c.layers }, () => ({ keys: new Float32Array(0), values: new Float32Array(0) }));
        return result;
      }
      await injector.settle();
      const done = await withErrorScopes(ctx.device, 'KV readback', () => {
        const rec = ctx.recorder();
        cache.reserve(end, () => rec);
        for (let l = 0; l < c.layers; l++) {
          rec.readback(cache.keys[l]!, start * tokenStride * 4, bytes);
          rec.readback(cache.values[l]!, start * tokenStride * 4, bytes);
        }
        return rec.submit();
      });
      const buffers = await done;
      for (let l = 0; l < c.layers; l++) {
        result.perLayer.push({ keys: new Float32Array(buffers[2 * l]!), values: new Float32Array(buffers[2 * l + 1]!) });
      }
      return result;
    },

    async writeKVLayer(handle, header: KVHeader, block: KVLayerBlock, position: number): Promise<void> {
      alive();
      const cache = own(handle);
      if (block.layer < 0 || block.layer >= c.layers) throw new KdnError('KV_MISMATCH', `KV layer ${block.layer} does not exist in a ${c.layers}-layer model`);
      if (header.kvHeads !== c.kvHeads || header.headDim !== c.headDim) {
        throw new KdnError('KV_MISMATCH', `KV object has ${header.kvHeads} KV heads of ${header.headDim}, the model ${c.kvHeads} of ${c.headDim}`);
      }
      checkRange(cache, position, position + header.tokens);
      const expected = codecFor(header.codec).expectedSize({ tokens: header.tokens, kvHeads: c.kvHeads, headDim: c.headDim }, block.layer);
      if (block.encoded.length !== expected) {
        throw new KdnError('KV_CORRUPT', `KV layer ${block.layer} block is ${block.encoded.length} bytes, the ${header.codec.name} codec expects ${expected}`);
      }
      if (header.tokens === 0) return;
      GPU_EXPANDERS[header.codec.name].check(expandEnv, header.codec);
      // Growing copies go into the batch first, so they land before the expanded rows.
      cache.reserve(position + header.tokens, () => injector.recorder());
      // The encoded bytes go up in one write and are expanded on the GPU: no host decode.
      await injector.write(block.encoded, { cache, layer: block.layer, header, position });
    },

    useTransformTable(table) {
      alive();
      tables.use(table);
    },

    async saveKVRows(handle, start, end) {
      alive();
      const cache = own(handle);
      checkRange(cache, start, end);
      return GpuKVRows.save(ctx, injector, cache, start, end);
    },

    async loadKVRows(handle, rows, position) {
      alive();
      const cache = own(handle);
      if (!(rows instanceof GpuKVRows)) throw new KdnError('INTERNAL', 'saved KV rows do not belong to the webgpu backend');
      checkRange(cache, position, position + rows.tokens);
      rows.load(ctx, injector, gpuWeights.invFreq, cache, position, c);
    },

    async reserveKV(handle, tokens: number): Promise<void> {
      alive();
      const cache = own(handle);
      checkRange(cache, 0, tokens);
      // Through the injection batch, so the growth lands before rows injected after it. Not settled here: a fresh
      // session's reserve records no GPU work at all, and a growth copy's errors surface at the next settle.
      cache.reserve(tokens, () => injector.recorder());
    },

    async settleKVWrites(handle): Promise<void> {
      alive();
      own(handle);
      await injector.settle();
    },

    flushKVWrites(handle): void {
      alive();
      own(handle);
      injector.flush();
    },

    async dispose() {
      if (disposed) return;
      disposed = true;
      injector.destroy();
      tables.destroy();
      pool.destroy();
      scratch.destroy();
      gpuWeights.destroy();
      ctx.dispose();
    },
  };
}
