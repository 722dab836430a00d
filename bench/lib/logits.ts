/** Comparisons of next-token distributions given as raw logits. */

export function argmax(logits: ArrayLike<number>, offset = 0, length = logits.length - offset): number {
  let best = 0;
  let bestValue = -Infinity;
  for (let i = 0; i < length; i++) {
    const v = logits[offset + i]!;
    if (v > bestValue) {
      bestValue = v;
      best = i;
    }
  }
  return best;
}

/** log softmax of one row, in float64 for a KL that does not drown in rounding. */
export function logSoftmax(logits: ArrayLike<number>, offset: number, length: number): Float64Array {
  let max = -Infinity;
  for (let i = 0; i < length; i++) max = Math.max(max, logits[offset + i]!);
  let sum = 0;
  for (let i = 0; i < length; i++) sum += Math.exp(logits[offset + i]! - max);
  const logZ = max + Math.log(sum);
  const out = new Float64Array(length);
  for (let i = 0; i < length; i++) out[i] = logits[offset + i]! - logZ;
  return out;
}

/** KL(p || q) in nats between the distributions of two logit rows; >= 0 up to rounding, clamped at 0. */
export function klDivergence(p: ArrayLike<number>, pOffset: number, q: ArrayLike<number>, qOffset: number, length: number): number {
  const lp = logSoftmax(p, pOffset, length);
  const lq = logSoftmax(q, qOffset, length);
  let kl = 0;
  for (let i = 0; i < length; i++) kl += Math.exp(lp[i]!) * (lp[i]! - lq[i]!);
  return Math.max(0, kl);
}
