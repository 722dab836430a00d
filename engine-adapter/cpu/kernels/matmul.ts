/**
 * Linear layer in Hugging Face orientation: out[m][n] = sum_k x[m][k] * w[n][k] (+ bias[n]).
 * Shapes: x [rows][inFeatures], w [outFeatures][inFeatures], bias [outFeatures], out [rows][outFeatures].
 * `out` must not alias `x`.
 */
export function matmul(
  out: Float32Array,
  x: Float32Array,
  w: Float32Array,
  rows: number,
  inFeatures: number,
  outFeatures: number,
  bias?: Float32Array,
): void {
  const k = inFeatures;
  // Both x's row and w's row are contiguous, so the inner loop is a plain dot product; four accumulators let the
  // JIT overlap the additions.
  const k4 = k - (k % 4);
  for (let m = 0; m < rows; m++) {
    const xo = m * k;
    const oo = m * outFeatures;
    for (let n = 0; n < outFeatures; n++) {
      const wo = n * k;
      let s0 = 0;
      let s1 = 0;
      let s2 = 0;
      let s3 = 0;
      let i = 0;
      for (; i < k4; i += 4) {
        s0 += x[xo + i]! * w[wo + i]!;
        s1 += x[xo + i + 1]! * w[wo + i + 1]!;
        s2 += x[xo + i + 2]! * w[wo + i + 2]!;
        s3 += x[xo + i + 3]! * w[wo + i + 3]!;
      }
      for (; i < k; i++) s0 += x[xo + i]! * w[wo + i]!;
      out[oo + n] = s0 + s1 + s2 + s3 + (bias ? bias[n]! : 0);
    }
  }
}
