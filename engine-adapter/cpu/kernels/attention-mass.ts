/**
 * How much a few query rows (a prompt's last tokens) attend to each key: out[j] = the sum over those rows and every
 * query head of the row's softmax probability on key j, divided by rows * heads (so it sums to 1 over the keys).
 * A blend weighs each context token's K/V deviation by it: a token the prompt reads matters more.
 *
 * Shapes: q [rows][heads][headDim] (after RoPE), keys [ctx][kvHeads][headDim] (the cache), positions [rows] = each
 * row's absolute position; causal, with the sliding window of ./attention.ts. out [ctx].
 */
import { causalScores, type AttentionShape } from './attention.ts';

export function attentionMass(
  out: Float32Array,
  q: Float32Array,
  positions: ArrayLike<number>,
  keys: Float32Array,
  shape: AttentionShape,
): void {
  const { tokens, heads, kvHeads, headDim, slidingWindow } = shape;
  const group = heads / kvHeads;
  const scale = 1 / Math.sqrt(headDim);
  const kvStride = kvHeads * headDim;
  const acc = new Float64Array(out.length);
  const scores = new Float64Array(out.length);
  for (let t = 0; t < tokens; t++) {
    const pos = positions[t]!;
    const first = slidingWindow === null ? 0 : Math.max(0, pos - slidingWindow + 1);
    for (let h = 0; h < heads; h++) {
      const qo = (t * heads + h) * headDim;
      const kvo = Math.floor(h / group) * headDim;
      const max = causalScores(scores, q, qo, keys, kvo, { first, last: pos, kvStride, headDim, scale });
      let sum = 0;
      for (let j = first; j <= pos; j++) sum += Math.exp(scores[j]! - max);
      for (let j = first; j <= pos; j++) acc[j] = acc[j]! + Math.exp(scores[j]! - max) / sum;
    }
  }
  const norm = 1 / (tokens * heads);
  for (let j = 0; j < out.length; j++) out[j] = acc[j]! * norm;
}
