/**
 * Numerically stable softmax of each row: out[r][i] = exp(x[r][i] - max_r) / sum_j exp(x[r][j] - max_r).
 * Shapes: x and out [rows][n]; `out` may be `x`. Rows of all -Infinity become all zeros rather than NaN.
 */
export function softmax(out: Float32Array, x: Float32Array, rows: number, n: number): void {
  for (let r = 0; r < rows; r++) {
    const base = r * n;
    let max = -Infinity;
    for (let i = 0; i < n; i++) if (x[base + i]! > max) max = x[base + i]!;
    if (max === -Infinity) {
      out.fill(0, base, base + n);
      continue;
    }
    let sum = 0;
    for (let i = 0; i < n; i++) {
      const e = Math.exp(x[base + i]! - max);
      out[base + i] = e;
      sum += e;
    }
    const inv = 1 / sum;
    for (let i = 0; i < n; i++) out[base + i] = out[base + i]! * inv;
  }
}
