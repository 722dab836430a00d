/**
 * SwiGLU activation of the MLP: out[i] = silu(gate[i]) * up[i], silu(x) = x / (1 + e^-x).
 * Shapes: gate, up, out [n] (any [rows][intermediate] flattened). `out` may alias `gate` or `up`.
 */
export function swiglu(out: Float32Array, gate: Float32Array, up: Float32Array, n: number): void {
  for (let i = 0; i < n; i++) {
    const g = gate[i]!;
    out[i] = (g / (1 + Math.exp(-g))) * up[i]!;
  }
}
