/**
 * CacheBlend's selection signal: for each new row t, the squared L2 distance between its freshly computed key and
 * value and the key and value the cache holds at its slot (injected KV computed without the row's real prefix).
 * Shapes: k, v [rows][rowSize]; cacheK, cacheV [slots][rowSize]; slots [rows]; out [rows].
 */
export function kvDeviation(
  out: Float32Array,
  k: Float32Array,
  v: Float32Array,
  cacheK: Float32Array,
  cacheV: Float32Array,
  slots: ArrayLike<number>,
  rowSize: number,
): void {
  for (let t = 0; t < slots.length; t++) {
    const at = slots[t]! * rowSize;
    const row = t * rowSize;
    let sum = 0;
    for (let i = 0; i < rowSize; i++) {
      const dk = k[row + i]! - cacheK[at + i]!;
      const dv = v[row + i]! - cacheV[at + i]!;
      sum += dk * dk + dv * dv;
    }
    out[t] = sum;
  }
}
