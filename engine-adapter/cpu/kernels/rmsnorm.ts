/**
 * RMSNorm over each row: out[r][i] = x[r][i] / sqrt(mean(x[r]^2) + eps) * weight[i].
 * Shapes: x and out [rows][dim], weight [dim]. `out` may be `x`.
 * For Qwen3's q/k norm pass rows = tokens * heads and dim = headDim.
 * Like HF, the mean is taken in float32-or-better and the weight applied after normalizing.
 */
export function rmsnorm(out: Float32Array, x: Float32Array, weight: Float32Array, rows: number, dim: number, eps: number): void {
  for (let r = 0; r < rows; r++) {
    const base = r * dim;
    let sum = 0;
    for (let i = 0; i < dim; i++) {
      const v = x[base + i]!;
      sum += v * v;
    }
    const inv = 1 / Math.sqrt(sum / dim + eps);
    for (let i = 0; i < dim; i++) out[base + i] = x[base + i]! * inv * weight[i]!;
  }
}
