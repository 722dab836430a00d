/** Residual add: out[i] = a[i] + b[i] for i < n. `out` may alias `a` or `b`. */
export function add(out: Float32Array, a: Float32Array, b: Float32Array, n: number): void {
  for (let i = 0; i < n; i++) out[i] = a[i]! + b[i]!;
}
