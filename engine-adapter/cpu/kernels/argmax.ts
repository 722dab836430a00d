/** Index of the largest of x[0..n) (the first one on ties, like torch.argmax); NaN never wins. */
export function argmax(x: Float32Array, n: number = x.length): number {
  let best = 0;
  let bestValue = -Infinity;
  for (let i = 0; i < n; i++) {
    const v = x[i]!;
    if (v > bestValue) {
      bestValue = v;
      best = i;
    }
  }
  return best;
}
