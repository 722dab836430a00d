import { KdnError } from '../../common/errors.ts';
import type { BlendOutput, BlendPlan, BlendSignals } from '../backend.ts';
import { indicesIn } from '../blend-selection.ts';
import type { ModelWeights } from '../model/weights.ts';
import { add } from './kernels/add.ts';
import { attention } from './kernels/attention.ts';
import { attentionMass } from './kernels/attention-mass.ts';
import { embedding } from './kernels/embedding.ts';
import { kvDeviation } from './kernels/kv-deviation.ts';
import { matmul } from './kernels/matmul.ts';
import { rmsnorm } from './kernels/rmsnorm.ts';
import { applyRope } from './kernels/rope.ts';
import { swiglu } from './kernels/swiglu.ts';
import type { CpuKVCache } from './kv-cache.ts';

/**
 * Rows of the residual stream going through the decoder together: row t is the token at cache slot slots[t],
 * rotated as if at ropePositions[t]. Slots ascend, so a row's attention (keys at slots <= its own) sees the rows
 * before it in the same pass.
 */
export interface Rows {
  x: Float32Array;
  n: number;
  slots: Float64Array;
  ropePositions: Float64Array;
}

/** Per-layer intermediates for `n` rows. */
export class LayerScratch {
  readonly h: Float32Array;
  readonly q: Float32Array;
  readonly k: Float32Array;
  readonly v: Float32Array;
  readonly attn: Float32Array;
  readonly gate: Float32Array;
  readonly up: Float32Array;

  constructor(weights: ModelWeights, n: number) {
    const c = weights.config;
    this.h = new Float32Array(n * c.hiddenSize);
    this.q = new Float32Array(n * c.heads * c.headDim);
    this.k = new Float32Array(n * c.kvHeads * c.headDim);
    this.v = new Float32Array(n * c.kvHeads * c.headDim);
    this.attn = new Float32Array(n * c.heads * c.headDim);
    this.gate = new Float32Array(n * c.intermediateSize);
    this.up = new Float32Array(n * c.intermediateSize);
  }
}

/**
 * Decoder layer `l` over `rows`: pre-norm attention (q/k/v biases for Qwen2, per-head q/k RMSNorm before RoPE for
 * Qwen3) and a SwiGLU MLP, each added to the residual stream.
 */
function cpuLayer(weights: ModelWeights, invFreq: Float32Array, cache: CpuKVCache, l: number, rows: Rows, s: LayerScratch): void {
  cpuLayerKV(weights, invFreq, cache, l, rows, s);
  cpuLayerRest(weights, cache, l, rows, s);
}

/**
 * The first part of layer `l`: the rows' queries into s.q and their post-RoPE keys and values written into the cache
 * at their slots. With `deviation`, each row's squared distance between its new K/V and what the cache held at its
 * slot is stored there first (CacheBlend's selection signal).
 */
function cpuLayerKV(
  weights: ModelWeights,
  invFreq: Float32Array,
  cache: CpuKVCache,
  l: number,
  rows: Rows,
  s: LayerScratch,
  deviation?: Float32Array,
): void {
  const kvDim = weights.config.kvHeads * weights.config.headDim;
  projectQKV(weights, invFreq, l, rows, s);
  if (deviation) kvDeviation(deviation, s.k, s.v, cache.keys[l]!, cache.values[l]!, rows.slots, kvDim);
  writeRowsKV(weights, cache, l, rows, s, 0, rows.n);
}

/** The rest of layer `l` after cpuLayerKV: attention over the cache, the output projection, the MLP. */
function cpuLayerRest(weights: ModelWeights, cache: CpuKVCache, l: number, rows: Rows, s: LayerScratch): void {
  attendRows(weights, cache, l, rows, s, 0, rows.n);
  outputAndMlp(weights, l, rows, s);
}

/** Layer `l`'s input norm and q/k/v projections of every row into s.q, s.k, s.v, rotated at the rows' positions. */
export function projectQKV(weights: ModelWeights, invFreq: Float32Array, l: number, rows: Rows, s: LayerScratch): void {
  const c = weights.config;
  const { x, n } = rows;
  const hidden = c.hiddenSize;
  const w = weights.layers[l]!;
  rmsnorm(s.h, x, w.inputNorm.data, n, hidden, c.rmsNormEps);
  matmul(s.q, s.h, w.q.data, n, hidden, c.heads * c.headDim, w.qBias?.data);
  matmul(s.k, s.h, w.k.data, n, hidden, c.kvHeads * c.headDim, w.kBias?.data);
  matmul(s.v, s.h, w.v.data, n, hidden, c.kvHeads * c.headDim, w.vBias?.data);
  if (w.qNorm && w.kNorm) {
    rmsnorm(s.q, s.q, w.qNorm.data, n * c.heads, c.headDim, c.rmsNormEps);
    rmsnorm(s.k, s.k, w.kNorm.data, n * c.kvHeads, c.headDim, c.rmsNormEps);
  }
  applyRope(s.q, s.q, n, c.heads, c.headDim, rows.ropePositions, invFreq);
  applyRope(s.k, s.k, n, c.kvHeads, c.headDim, rows.ropePositions, invFreq);
}

/** The keys and values of rows [first, first + count) (in s.k, s.v) into layer `l` of `cache` at their slots. */
export function writeRowsKV(
  weights: ModelWeights,
  cache: CpuKVCache,
  l: number,
  rows: Rows,
  s: LayerScratch,
  first: number,
  count: number,
): void {
  const kvDim = weights.config.kvHeads * weights.config.headDim;
  const keys = cache.keys[l]!;
  const values = cache.values[l]!;
  for (let t = first; t < first + count; t++) {
    const at = rows.slots[t]! * kvDim;
    keys.set(s.k.subarray(t * kvDim, (t + 1) * kvDim), at);
    values.set(s.v.subarray(t * kvDim, (t + 1) * kvDim), at);
  }
}

/** Attention of rows [first, first + count) (queries in s.q) over layer `l` of `cache`, into s.attn. */
export function attendRows(
  weights: ModelWeights,
  cache: CpuKVCache,
  l: number,
  rows: Rows,
  s: LayerScratch,
  first: number,
  count: number,
): void {
  const c = weights.config;
  const qDim = c.heads * c.headDim;
  const shape = { tokens: count, heads: c.heads, kvHeads: c.kvHeads, headDim: c.headDim, slidingWindow: c.slidingWindow };
  const out = s.attn.subarray(first * qDim, (first + count) * qDim);
  const q = s.q.subarray(first * qDim, (first + count) * qDim);
  attention(out, q, rows.slots.subarray(first, first + count), cache.keys[l]!, cache.values[l]!, shape);
}

/** Layer `l` after attention (in s.attn): the output projection and the SwiGLU MLP, each added to the residual. */
export function outputAndMlp(weights: ModelWeights, l: number, rows: Rows, s: LayerScratch): void {
  const c = weights.config;
  const { x, n } = rows;
  const hidden = c.hiddenSize;
  const w = weights.layers[l]!;
  matmul(s.h, s.attn, w.o.data, n, c.heads * c.headDim, hidden);
  add(x, x, s.h, n * hidden);

  rmsnorm(s.h, x, w.postAttentionNorm.data, n, hidden, c.rmsNormEps);
  matmul(s.gate, s.h, w.gate.data, n, hidden, c.intermediateSize);
  matmul(s.up, s.h, w.up.data, n, hidden, c.intermediateSize);
  swiglu(s.gate, s.gate, s.up, n * c.intermediateSize);
  matmul(s.h, s.gate, w.down.data, n, c.intermediateSize, hidden);
  add(x, x, s.h, n * hidden);
}

/** The final norm and lm_head over the rows `logits` asks for. */
export function cpuLogits(weights: ModelWeights, rows: Rows, logits: 'last' | 'all' | 'none'): Float32Array {
  const c = weights.config;
  const hidden = c.hiddenSize;
  if (logits === 'none') return new Float32Array(0);
  const first = logits === 'last' ? rows.n - 1 : 0;
  const count = rows.n - first;
  const normed = new Float32Array(count * hidden);
  rmsnorm(normed, rows.x.subarray(first * hidden), weights.finalNorm.data, count, hidden, c.rmsNormEps);
  const out = new Float32Array(count * c.vocabSize);
  matmul(out, normed, weights.lmHead.data, count, hidden, c.vocabSize);
  return out;
}

/** Embedded rows of `tokens` at consecutive slots from `position`, rotated from `ropeBase`. */
function embedRows(weights: ModelWeights, tokens: Uint32Array, position: number, ropeBase: number): Rows {
  const n = tokens.length;
  const slots = new Float64Array(n);
  const ropePositions = new Float64Array(n);
  for (let t = 0; t < n; t++) {
    slots[t] = position + t;
    ropePositions[t] = ropeBase + t;
  }
  const x = new Float32Array(n * weights.config.hiddenSize);
  embedding(x, weights.embed.data, weights.config.hiddenSize, tokens);
  return { x, n, slots, ropePositions };
}

/** The rows of `rows` at the ascending indices `pick`. */
export function gatherRows(rows: Rows, pick: Uint32Array, hidden: number): Rows {
  const n = pick.length;
  const x = new Float32Array(n * hidden);
  const slots = new Float64Array(n);
  const ropePositions = new Float64Array(n);
  pick.forEach((r, i) => {
    x.set(rows.x.subarray(r * hidden, (r + 1) * hidden), i * hidden);
    slots[i] = rows.slots[r]!;
    ropePositions[i] = rows.ropePositions[r]!;
  });
  return { x, n, slots, ropePositions };
}

/**
 * One forward pass of a Llama-family decoder over `tokens` at positions [position, position + tokens.length),
 * following transformers' LlamaDecoderLayer. Returns the final hidden states normed, for the rows `logits` asks for
 * projected through lm_head.
 *
 * `ropeBase` rotates the tokens as if they sat at [ropeBase, ...) while they occupy cache slots [position, ...):
 * run on an empty cache at slot 0, it computes a chunk alone at any offset (the reference for re-rotation).
 */
export function cpuForward(
  weights: ModelWeights,
  invFreq: Float32Array,
  cache: CpuKVCache,
  tokens: Uint32Array,
  position: number,
  logits: 'last' | 'all' | 'none',
  ropeBase: number = position,
): Float32Array {
  cache.reserve(position + tokens.length);
  const rows = embedRows(weights, tokens, position, ropeBase);
  const scratch = new LayerScratch(weights, rows.n);
  for (let l = 0; l < weights.config.layers; l++) cpuLayer(weights, invFreq, cache, l, rows, scratch);
  return cpuLogits(weights, rows, logits);
}

/**
 * A selective recompute over `tokens` at [position, ...), whose cache slots already hold injected KV (see
 * BlendPlan): layers before plan.checkLayer run every row; at the check layer (and with plan.narrows at each layer
 * after it) the rows still running compute their K/V (its deviation from the cache, and with plan.massRows the last
 * rows' attention on it, measured first) and write it; the rows the plan picks from those signals run the rest of
 * the layer and go on, attending to the whole cache. Returns the last row's logits (the plan always keeps it), the
 * rows that ran the last layer and the rows per layer from the first selecting layer on.
 */
export function cpuBlendForward(
  weights: ModelWeights,
  invFreq: Float32Array,
  cache: CpuKVCache,
  tokens: Uint32Array,
  position: number,
  plan: BlendPlan,
  logits: 'last' | 'none',
): BlendOutput {
  const c = weights.config;
  cache.reserve(position + tokens.length);
  let rows = embedRows(weights, tokens, position, position);
  let picked: Uint32Array = Uint32Array.from({ length: rows.n }, (_, r) => r);
  const from = plan.checkLayer ?? 0;
  if (plan.checkLayer === null) {
    picked = plan.select(null, 0, picked);
    rows = gatherRows(rows, picked, c.hiddenSize);
  }
  // Sized for the rows running; made again only when a selection changes them.
  let scratch = new LayerScratch(weights, rows.n);
  for (let l = 0; l < from; l++) cpuLayer(weights, invFreq, cache, l, rows, scratch);
  let ran = 0;
  for (let l = from; l < c.layers; l++) {
    if (l === plan.checkLayer || (plan.narrows && l > from)) {
      const signals = blendSignals(weights, invFreq, cache, l, rows, scratch, plan.massRows, tokens.length);
      const next = plan.select(signals, l, picked);
      const kept = indicesIn(picked, next);
      if (!kept) throw new KdnError('INTERNAL', 'a blend plan selected a row that no longer runs');
      rows = gatherRows(rows, kept, c.hiddenSize);
      picked = next;
      scratch = new LayerScratch(weights, rows.n);
    }
    cpuLayer(weights, invFreq, cache, l, rows, scratch);
    ran += rows.n;
  }
  return { logits: cpuLogits(weights, rows, logits), rows: picked, meanRows: ran / (c.layers - from) };
}

/**
 * Layer `l`'s K/V of `rows` written over the cache, and the signals measured first, indexed by row of the forward's
 * `total` rows (the rows' slots less the first's, which is row 0's).
 */
function blendSignals(
  weights: ModelWeights,
  invFreq: Float32Array,
  cache: CpuKVCache,
  l: number,
  rows: Rows,
  s: LayerScratch,
  massRows: number,
  total: number,
): BlendSignals {
  const c = weights.config;
  const measured = new Float32Array(rows.n);
  cpuLayerKV(weights, invFreq, cache, l, rows, s, measured);
  const position = rows.slots[rows.n - 1]! - (total - 1);
  const deviation = new Float32Array(total);
  measured.forEach((d, t) => (deviation[rows.slots[t]! - position] = d));
  return { deviation, mass: massRows > 0 ? promptMass(c, cache.keys[l]!, rows, s, massRows, { position, total }) : null };
}

/**
 * BlendSignals.mass: the attention of the last `count` of `rows` (queries in s.q) on the keys of the forward's
 * `total` rows from `position` (the keys before them are not rows).
 */
function promptMass(
  c: ModelWeights['config'],
  keys: Float32Array,
  rows: Rows,
  s: LayerScratch,
  count: number,
  { position, total }: { position: number; total: number },
): Float32Array {
  const first = rows.n - count;
  const qDim = c.heads * c.headDim;
  const mass = new Float32Array(position + total);
  const shape = { tokens: count, heads: c.heads, kvHeads: c.kvHeads, headDim: c.headDim, slidingWindow: c.slidingWindow };
  attentionMass(mass, s.q.subarray(first * qDim), rows.slots.subarray(first), keys, shape);
  return mass.subarray(position);
}
