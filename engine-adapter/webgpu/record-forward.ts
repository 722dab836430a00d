/**
 * Records one chunk of a forward pass (every layer, then the logits asked for) into Recorders: the same
 * Llama-family decoder as engine-adapter/cpu/forward.ts, kernel for kernel. A forward whose context is still
 * arriving records and submits it a few layers at a time (webgpu-backend.ts).
 */
import type { ModelConfig } from '../model/config.ts';
import type { ForwardScratch } from './forward-scratch.ts';
import type { GpuContext, Recorder } from './gpu-context.ts';
import type { GpuKVCache } from './gpu-kv-cache.ts';
import type { GpuModelWeights } from './gpu-weights.ts';
import { recordAttention } from './kernels/attention.ts';
import { recordEmbedding } from './kernels/embedding.ts';
import { recordKvDeviation } from './kernels/kv-deviation.ts';
import { recordKvWrite } from './kernels/kv-write.ts';
import { recordMatmul } from './kernels/matmul.ts';
import { recordMatmulAddNorm } from './kernels/matmul-add-norm.ts';
import { planStacked, recordQkvIntoCache, recordStackedMatmul } from './kernels/matmul-stacked.ts';
import { recordRmsNorm } from './kernels/rmsnorm.ts';
import { recordRope } from './kernels/rope.ts';

export interface ChunkArgs {
  /** Token ids already written to scratch.ids. */
  tokens: number;
  /** Absolute position of the chunk's first token. */
  position: number;
  logits: 'last' | 'all' | 'none';
  /**
   * Rows gathered from anywhere in the sequence (a blended forward's recomputed tokens): row t sits at position
   * slots.buffer[t] (u32, ascending), the last at slots.last. Absent: row t sits at position + t.
   */
  slots?: { buffer: GPUBuffer; last: number };
}

/** Where a layer stores each row's K/V deviation from the cache (kernels/kv-deviation.ts) before overwriting it. */
export interface DeviationOut {
  buffer: GPUBuffer;
  /** Index of the chunk's first row in `buffer`. */
  offset: number;
}

/** What recording one chunk's pieces needs. */
export interface ForwardParts {
  ctx: GpuContext;
  config: ModelConfig;
  w: GpuModelWeights;
  s: ForwardScratch;
  cache: GpuKVCache;
}

/** What recording a piece that touches no KV cache needs. */
export type ModelParts = Omit<ForwardParts, 'cache'>;

/** Records the chunk; returns the readback index of its logits, or null for 'none'. */
export function recordForwardChunk(rec: Recorder, f: ForwardParts, a: ChunkArgs): number | null {
  recordEmbeddingStep(rec, f, a);
  for (let l = 0; l < f.config.layers; l++) recordLayer(rec, f, a, l);
  return recordLogits(rec, f, a);
}

/** The chunk's token embeddings into the residual stream. */
export function recordEmbeddingStep(rec: Recorder, f: ForwardParts, a: ChunkArgs): void {
  recordEmbedding(f.ctx, rec, { ids: f.s.ids, table: f.w.embed, out: f.s.x, tokens: a.tokens });
}

/** Decoder layer `l` over the chunk: its KV written into the cache, attention over the cache, the MLP. */
export function recordLayer(rec: Recorder, f: ForwardParts, a: ChunkArgs, l: number): void {
  recordLayerRest(rec, f, a, l, recordLayerKV(rec, f, a, l));
}

/**
 * The first part of layer `l`: the chunk's queries (returned: the buffer holding them after RoPE) and its keys and
 * values written into the cache. With `deviation`, each row's K/V deviation from what the cache held is recorded
 * before the write. Where q|k|v runs as one split product (a question's rows: matmul-stacked.ts) and nothing comes
 * between the projections and the write (no Qwen3 q/k norms, no deviation), its reduction does RoPE and the write.
 */
export function recordLayerKV(rec: Recorder, f: ForwardParts, a: ChunkArgs, l: number, deviation?: DeviationOut): GPUBuffer {
  const { ctx, s, cache } = f;
  const c = f.config;
  const n = a.tokens;
  const kvDim = c.kvHeads * c.headDim;
  const lw = f.w.layers[l]!;
  const slots = a.slots?.buffer;
  const cacheK = cache.keys[l]!;
  const cacheV = cache.values[l]!;
  const plan = deviation || lw.qNorm || lw.kNorm ? null : planStacked(ctx, lw.qkv, n);
  if (plan !== null) {
    recordInputNorm(rec, f, n, l);
    const rope = { invFreq: f.w.invFreq, headDim: c.headDim, position: a.position, slots };
    recordQkvIntoCache(ctx, rec, { x: s.h, w: lw.qkv, m: n, plan, q: s.q, cacheK, cacheV, ...rope });
    return s.q;
  }
  const { q, k } = recordProjections(rec, f, n, l);
  recordRope(ctx, rec, { x: q, invFreq: f.w.invFreq, tokens: n, heads: c.heads, headDim: c.headDim, posBase: a.position, slots });
  recordRope(ctx, rec, { x: k, invFreq: f.w.invFreq, tokens: n, heads: c.kvHeads, headDim: c.headDim, posBase: a.position, slots });
  if (deviation) {
    recordKvDeviation(ctx, rec, {
      k,
      v: s.v,
      cacheK,
      cacheV,
      rows: n,
      rowSize: kvDim,
      position: a.position,
      out: deviation.buffer,
      outOffset: deviation.offset,
      slots,
    });
  }
  recordKvWrite(ctx, rec, { k, v: s.v, cacheK, cacheV, tokens: n, rowSize: kvDim, position: a.position, slots });
  return q;
}

/**
 * Layer `l`'s input norm and q/k/v projections of `n` rows (with Qwen3's per-head q/k norms), before RoPE; returns
 * the buffers holding q and k (v is in s.v).
 */
export function recordProjections(rec: Recorder, f: ModelParts, n: number, l: number): { q: GPUBuffer; k: GPUBuffer } {
  const { ctx, s } = f;
  const c = f.config;
  const lw = f.w.layers[l]!;
  recordInputNorm(rec, f, n, l);
  recordStackedMatmul(ctx, rec, { x: s.h, w: lw.qkv, m: n, out: { kind: 'columns', ys: [s.q, s.k, s.v] } });
  if (!(lw.qNorm && lw.kNorm)) return { q: s.q, k: s.k };
  const eps = c.rmsNormEps;
  recordRmsNorm(ctx, rec, { x: s.q, weight: lw.qNorm, out: s.qNormed, rows: n * c.heads, n: c.headDim, eps });
  recordRmsNorm(ctx, rec, { x: s.k, weight: lw.kNorm, out: s.kNormed, rows: n * c.kvHeads, n: c.headDim, eps });
  return { q: s.qNormed, k: s.kNormed };
}

/** Layer `l`'s input norm of `n` rows of the residual stream s.x into s.h. */
function recordInputNorm(rec: Recorder, f: ModelParts, n: number, l: number): void {
  const { ctx, s } = f;
  const c = f.config;
  recordRmsNorm(ctx, rec, { x: s.x, weight: f.w.layers[l]!.inputNorm, out: s.h, rows: n, n: c.hiddenSize, eps: c.rmsNormEps });
}

/** The rest of layer `l` after recordLayerKV (whose queries are in `q`): attention, output projection, MLP. */
export function recordLayerRest(rec: Recorder, f: ForwardParts, a: ChunkArgs, l: number, q: GPUBuffer): void {
  const { ctx, s, cache } = f;
  const c = f.config;
  const heads = { heads: c.heads, kvHeads: c.kvHeads, headDim: c.headDim };
  const kv = { cacheK: cache.keys[l]!, cacheV: cache.values[l]! };
  const rows = { tokens: a.tokens, posBase: a.position, window: c.slidingWindow, slots: a.slots };
  recordAttention(ctx, rec, { q, ...kv, out: s.attn, ...heads, ...rows });
  recordOutputAndMlp(rec, f, a.tokens, l);
}

/**
 * Layer `l` after attention (in s.attn) over `n` rows: the output projection and the MLP, each added to s.x as its
 * matmul finishes, the post-attention norm done with the output projection's reduction where it splits
 * (matmul-add-norm.ts), and SwiGLU applied as gate and up's product finishes (matmul-stacked.ts).
 */
export function recordOutputAndMlp(rec: Recorder, f: ModelParts, n: number, l: number): void {
  const { ctx, s } = f;
  const c = f.config;
  const lw = f.w.layers[l]!;
  const norm = { weight: lw.postAttentionNorm, out: s.h, eps: c.rmsNormEps };
  recordMatmulAddNorm(ctx, rec, { x: s.attn, w: lw.o, y: s.x, m: n, norm });
  recordStackedMatmul(ctx, rec, { x: s.h, w: lw.gateUp, m: n, out: { kind: 'swiglu', y: s.gate } });
  recordMatmul(ctx, rec, { x: s.gate, w: lw.down, y: s.x, m: n, into: 'add' });
}

/** The final norm and lm_head for the rows `a.logits` asks for; returns their readback index, or null for 'none'. */
export function recordLogits(rec: Recorder, f: ForwardParts, a: ChunkArgs): number | null {
  if (a.logits === 'none') return null;
  const { ctx, s, w } = f;
  const c = f.config;
  const hidden = c.hiddenSize;
  let rows = a.tokens;
  let normIn = s.x;
  if (a.logits === 'last') {
    rec.copy(s.x, (a.tokens - 1) * hidden * 4, s.last, 0, hidden * 4);
    rows = 1;
    normIn = s.last;
  }
  recordRmsNorm(ctx, rec, { x: normIn, weight: w.finalNorm, out: s.h, rows, n: hidden, eps: c.rmsNormEps });
  recordMatmul(ctx, rec, { x: s.h, w: w.lmHead, y: s.logits, m: rows });
  return rec.readback(s.logits, 0, rows * c.vocabSize * 4);
}
