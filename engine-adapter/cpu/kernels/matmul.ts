/**
 * Linear layer in Hugging Face orientation: out[m][n] = sum_k x[m][k] * w[n][k] (+ bias[n]).
 * Shapes: x [rows][inFeatures], w [outFeatures][inFeatures], bias [outFeatures], out [rows][outFeatures].
 * `out` must not alias `x`.
 *
 * Reading the weights bounds prefill on a CPU, so blocks of 4 rows x 2 weight rows share their loads (eight
 * accumulators); rows and columns left over take the plain dot product.
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
  let m = 0;
  for (; m + 4 <= rows; m += 4) {
    let n = 0;
    for (; n + 2 <= outFeatures; n += 2) block4x2(out, x, w, m, n, k, outFeatures, bias);
    for (; n < outFeatures; n++) {
      for (let r = m; r < m + 4; r++) out[r * outFeatures + n] = dot(x, r * k, w, n * k, k) + (bias ? bias[n]! : 0);
    }
  }
  for (; m < rows; m++) {
    for (let n = 0; n < outFeatures; n++) out[m * outFeatures + n] = dot(x, m * k, w, n * k, k) + (bias ? bias[n]! : 0);
  }
}

function block4x2(
  out: Float32Array,
  x: Float32Array,
  w: Float32Array,
  m: number,
  n: number,
  k: number,
  outFeatures: number,
  bias: Float32Array | undefined,
): void {
  const x0 = m * k;
  const x1 = x0 + k;
  const x2 = x1 + k;
  const x3 = x2 + k;
  const wa = n * k;
  const wb = wa + k;
  let a0 = 0,
    a1 = 0,
    a2 = 0,
    a3 = 0;
  let b0 = 0,
    b1 = 0,
    b2 = 0,
    b3 = 0;
  for (let i = 0; i < k; i++) {
    const va = w[wa + i]!;
    const vb = w[wb + i]!;
    const v0 = x[x0 + i]!;
    const v1 = x[x1 + i]!;
    const v2 = x[x2 + i]!;
    const v3 = x[x3 + i]!;
    a0 += v0 * va;
    a1 += v1 * va;
    a2 += v2 * va;
    a3 += v3 * va;
    b0 += v0 * vb;
    b1 += v1 * vb;
    b2 += v2 * vb;
    b3 += v3 * vb;
  }
  const ba = bias ? bias[n]! : 0;
  const bb = bias ? bias[n + 1]! : 0;
  const o = m * outFeatures + n;
  out[o] = a0 + ba;
  out[o + 1] = b0 + bb;
  out[o + outFeatures] = a1 + ba;
  out[o + outFeatures + 1] = b1 + bb;
  out[o + 2 * outFeatures] = a2 + ba;
  out[o + 2 * outFeatures + 1] = b2 + bb;
  out[o + 3 * outFeatures] = a3 + ba;
  out[o + 3 * outFeatures + 1] = b3 + bb;
}

/** sum_i x[xo + i] * w[wo + i]; four accumulators let the JIT overlap the additions. */
function dot(x: Float32Array, xo: number, w: Float32Array, wo: number, k: number): number {
  const k4 = k - (k % 4);
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
  return s0 + s1 + s2 + s3;
}
