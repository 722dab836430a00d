/**
 * IEEE 754 binary16 <-> float32 conversion. Encoding rounds to nearest, ties to even (what GPUs and
 * Float16Array do), overflows to infinity and keeps NaN a NaN; decoding is exact (a lookup table).
 */

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** Half bits of the float32 nearest to `x` (x is first rounded to float32, as a Float32Array store would). */
export function toHalfBits(x: number): number {
  f32[0] = x;
  const bits = u32[0]!;
  const sign = (bits >>> 16) & 0x8000;
  const exp = (bits >>> 23) & 0xff;
  const mant = bits & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant !== 0 ? 0x200 : 0);
  const e = exp - 112; // rebias 127 -> 15
  if (e >= 0x1f) return sign | 0x7c00;
  if (e > 0) {
    let h = sign | (e << 10) | (mant >>> 13);
    const rest = mant & 0x1fff;
    // A carry out of the mantissa correctly bumps the exponent (and 0x7bff + 1 is infinity).
    if (rest > 0x1000 || (rest === 0x1000 && (h & 1) === 1)) h++;
    return h;
  }
  // Subnormal half: the value is k * 2^-24 with k = (1.mant) * 2^(e - 14) * 2^23 / 2^23.
  const shift = 14 - e;
  if (shift > 24) return sign;
  const full = mant | 0x800000;
  let k = full >>> shift;
  const rest = full & ((1 << shift) - 1);
  const halfway = 1 << (shift - 1);
  if (rest > halfway || (rest === halfway && (k & 1) === 1)) k++;
  return sign | k;
}

function halfBitsToNumber(h: number): number {
  const sign = (h & 0x8000) !== 0 ? -1 : 1;
  const exp = (h >>> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 0x1f) return mant !== 0 ? NaN : sign * Infinity;
  return sign * (1 + mant / 1024) * 2 ** (exp - 15);
}

const HALF_TO_FLOAT = new Float32Array(65536);
for (let h = 0; h < 65536; h++) HALF_TO_FLOAT[h] = halfBitsToNumber(h);

/** The value of half bits `h` (exact). */
export function fromHalfBits(h: number): number {
  return HALF_TO_FLOAT[h & 0xffff]!;
}

/** The largest finite half. */
export const HALF_MAX = 65504;

/** Half bits of the largest half <= x (x finite, within +-HALF_MAX). */
export function toHalfBitsDown(x: number): number {
  let h = toHalfBits(x);
  if (fromHalfBits(h) > x) h = stepHalf(h, -1);
  return h;
}

/** Half bits of the smallest half >= x (x finite, within +-HALF_MAX). */
export function toHalfBitsUp(x: number): number {
  let h = toHalfBits(x);
  if (fromHalfBits(h) < x) h = stepHalf(h, +1);
  return h;
}

/** The adjacent half in direction `dir` (finite values only). */
function stepHalf(h: number, dir: 1 | -1): number {
  const negative = (h & 0x8000) !== 0;
  const magnitude = h & 0x7fff;
  if (magnitude === 0) return dir > 0 ? 0x0001 : 0x8001;
  // Moving away from zero grows the magnitude; toward zero shrinks it.
  return negative === dir < 0 ? h + 1 : h - 1;
}

/** Writes `src` as halves into `dst` (little-endian u16s), starting at byte offset `byteOffset`. */
export function writeHalves(src: Float32Array, dst: Uint8Array, byteOffset: number): void {
  for (let i = 0, o = byteOffset; i < src.length; i++, o += 2) {
    const h = toHalfBits(src[i]!);
    dst[o] = h & 0xff;
    dst[o + 1] = h >>> 8;
  }
}

/** Reads `count` little-endian halves from `src` at `byteOffset` into a new Float32Array. */
export function readHalves(src: Uint8Array, byteOffset: number, count: number): Float32Array {
  const out = new Float32Array(count);
  for (let i = 0, o = byteOffset; i < count; i++, o += 2) out[i] = HALF_TO_FLOAT[src[o]! | (src[o + 1]! << 8)]!;
  return out;
}
