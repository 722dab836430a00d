import type { ModelWeights } from '../model/weights.ts';
import { add } from './kernels/add.ts';
import { attention } from './kernels/attention.ts';
import { embedding } from './kernels/embedding.ts';
import { matmul } from './kernels/matmul.ts';
import { rmsnorm } from './kernels/rmsnorm.ts';
import { applyRope } from './kernels/rope.ts';
import { swiglu } from './kernels/swiglu.ts';
import type { CpuKVCache } from './kv-cache.ts';

/**
 * One forward pass of a Llama-family decoder over `tokens` at positions [position, position + tokens.length),
 * following transformers' LlamaDecoderLayer: pre-norm attention (q/k/v biases for Qwen2, per-head q/k RMSNorm
 * before RoPE for Qwen3) and a SwiGLU MLP, each added to the residual stream. Post-RoPE keys and values are written
 * into the cache before attention reads it. Returns the final hidden states normed, for the rows `logits` asks for
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
  const c = weights.config;
  const n = tokens.length;
  const hidden = c.hiddenSize;
  const qDim = c.heads * c.headDim;
  const kvDim = c.kvHeads * c.headDim;
  const positions = new Float64Array(n);
  const ropePositions = new Float64Array(n);
  for (let t = 0; t < n; t++) {
    positions[t] = position + t;
    ropePositions[t] = ropeBase + t;
  }
  cache.reserve(position + n);

  const x = new Float32Array(n * hidden);
  embedding(x, weights.embed.data, hidden, tokens);
  const h = new Float32Array(n * hidden);
  const q = new Float32Array(n * qDim);
  const k = new Float32Array(n * kvDim);
  const v = new Float32Array(n * kvDim);
  const attn = new Float32Array(n * qDim);
  const gate = new Float32Array(n * c.intermediateSize);
  const up = new Float32Array(n * c.intermediateSize);
  const shape = { tokens: n, heads: c.heads, kvHeads: c.kvHeads, headDim: c.headDim, slidingWindow: c.slidingWindow };

  for (let l = 0; l < c.layers; l++) {
    const w = weights.layers[l]!;
    rmsnorm(h, x, w.inputNorm.data, n, hidden, c.rmsNormEps);
    matmul(q, h, w.q.data, n, hidden, qDim, w.qBias?.data);
    matmul(k, h, w.k.data, n, hidden, kvDim, w.kBias?.data);
    matmul(v, h, w.v.data, n, hidden, kvDim, w.vBias?.data);
    if (w.qNorm && w.kNorm) {
      rmsnorm(q, q, w.qNorm.data, n * c.heads, c.headDim, c.rmsNormEps);
      rmsnorm(k, k, w.kNorm.data, n * c.kvHeads, c.headDim, c.rmsNormEps);
    }
    applyRope(q, q, n, c.heads, c.headDim, ropePositions, invFreq);
    applyRope(k, k, n, c.kvHeads, c.headDim, ropePositions, invFreq);
    cache.keys[l]!.set(k, position * kvDim);
    cache.values[l]!.set(v, position * kvDim);
    attention(attn, q, positions, cache.keys[l]!, cache.values[l]!, shape);
    matmul(h, attn, w.o.data, n, qDim, hidden);
    add(x, x, h, n * hidden);

    rmsnorm(h, x, w.postAttentionNorm.data, n, hidden, c.rmsNormEps);
    matmul(gate, h, w.gate.data, n, hidden, c.intermediateSize);
    matmul(up, h, w.up.data, n, hidden, c.intermediateSize);
    swiglu(gate, gate, up, n * c.intermediateSize);
    matmul(h, gate, w.down.data, n, c.intermediateSize, hidden);
    add(x, x, h, n * hidden);
  }

  if (logits === 'none') return new Float32Array(0);
  const first = logits === 'last' ? n - 1 : 0;
  const rows = n - first;
  const normed = new Float32Array(rows * hidden);
  rmsnorm(normed, x.subarray(first * hidden), weights.finalNorm.data, rows, hidden, c.rmsNormEps);
  const out = new Float32Array(rows * c.vocabSize);
  matmul(out, normed, weights.lmHead.data, rows, hidden, c.vocabSize);
  return out;
}
