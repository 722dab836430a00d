/**
 * Causal grouped-query attention of new queries against a token-major KV cache.
 *
 * Shapes: q and out [tokens][heads][headDim]; keys and values [ctx][kvHeads][headDim] (the cache, keys already
 * rotated), positions [tokens] = absolute position of each query. Query head h reads kv head
 * floor(h / (heads / kvHeads)). A query at position p sees cache entries j with j <= p and, with a sliding
 * window w, p - j < w (transformers' Mistral mask). Scores are scaled by 1/sqrt(headDim); the softmax subtracts
 * the row maximum so it cannot overflow.
 */
export interface AttentionShape {
  tokens: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  /** null: full causal attention. */
  slidingWindow: number | null;
}

export function attention(
  out: Float32Array,
  q: Float32Array,
  positions: ArrayLike<number>,
  keys: Float32Array,
  values: Float32Array,
  shape: AttentionShape,
): void {
  const { tokens, heads, kvHeads, headDim, slidingWindow } = shape;
  if (heads % kvHeads !== 0) throw new RangeError(`heads ${heads} is not a multiple of kvHeads ${kvHeads}`);
  const group = heads / kvHeads;
  const scale = 1 / Math.sqrt(headDim);
  const kvStride = kvHeads * headDim;
  let maxPos = 0;
  for (let t = 0; t < tokens; t++) maxPos = Math.max(maxPos, positions[t]!);
  if ((maxPos + 1) * kvStride > keys.length) throw new RangeError(`position ${maxPos} is outside the KV cache`);
  const scores = new Float64Array(maxPos + 1);
  const acc = new Float64Array(headDim);

  for (let t = 0; t < tokens; t++) {
    const pos = positions[t]!;
    const first = slidingWindow === null ? 0 : Math.max(0, pos - slidingWindow + 1);
    for (let h = 0; h < heads; h++) {
      const qo = (t * heads + h) * headDim;
      const kvo = Math.floor(h / group) * headDim;
      const max = causalScores(scores, q, qo, keys, kvo, { first, last: pos, kvStride, headDim, scale });
      let sum = 0;
      acc.fill(0);
      for (let j = first; j <= pos; j++) {
        const p = Math.exp(scores[j]! - max);
        sum += p;
        const vo = j * kvStride + kvo;
        for (let d = 0; d < headDim; d++) acc[d] = acc[d]! + p * values[vo + d]!;
      }
      const inv = 1 / sum;
      for (let d = 0; d < headDim; d++) out[qo + d] = acc[d]! * inv;
    }
  }
}

/**
 * The scaled scores of the query at q[qo..] against keys [first, last] of one KV head (keys[j * kvStride + kvo..])
 * into scores[first..last]; returns their maximum, for a softmax that cannot overflow.
 */
export function causalScores(
  scores: Float64Array,
  q: Float32Array,
  qo: number,
  keys: Float32Array,
  kvo: number,
  range: { first: number; last: number; kvStride: number; headDim: number; scale: number },
): number {
  const { first, last, kvStride, headDim, scale } = range;
  let max = -Infinity;
  for (let j = first; j <= last; j++) {
    const ko = j * kvStride + kvo;
    let s = 0;
    for (let d = 0; d < headDim; d++) s += q[qo + d]! * keys[ko + d]!;
    s *= scale;
    scores[j] = s;
    if (s > max) max = s;
  }
  return max;
}
