import { open, rename } from 'node:fs/promises';
import type { SafetensorsDtype } from './safetensors.ts';

/** A float32 tensor to store as `dtype`. */
export interface TensorToWrite {
  name: string;
  dtype: SafetensorsDtype;
  shape: number[];
  data: Float32Array;
}

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** float32 -> bfloat16 bits, rounding to nearest even (what torch does). */
export function floatToBf16Bits(x: number): number {
  f32[0] = x;
  const bits = u32[0]!;
  if ((bits & 0x7fffffff) > 0x7f800000) return 0x7fc0; // NaN
  return ((bits + 0x7fff + ((bits >>> 16) & 1)) >>> 16) & 0xffff;
}

/** float32 -> IEEE half bits, rounding to nearest even, with subnormals, overflow to infinity and NaN. */
export function floatToF16Bits(x: number): number {
  f32[0] = x;
  const bits = u32[0]!;
  const sign = (bits >>> 16) & 0x8000;
  const exp = (bits >>> 23) & 0xff;
  let mant = bits & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  const e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    const half = mant >>> shift;
    const rest = mant & ((1 << shift) - 1);
    const mid = 1 << (shift - 1);
    return sign | (half + (rest > mid || (rest === mid && half & 1) ? 1 : 0));
  }
  const half = (e << 10) | (mant >>> 13);
  const rest = mant & 0x1fff;
  // A carry out of the mantissa correctly bumps the exponent (up to infinity).
  return sign | (half + (rest > 0x1000 || (rest === 0x1000 && half & 1) ? 1 : 0));
}

function encode(t: TensorToWrite): Uint8Array {
  if (t.dtype === 'F32') return new Uint8Array(t.data.buffer.slice(t.data.byteOffset, t.data.byteOffset + t.data.byteLength));
  const out = new Uint16Array(t.data.length);
  const conv = t.dtype === 'BF16' ? floatToBf16Bits : floatToF16Bits;
  for (let i = 0; i < t.data.length; i++) out[i] = conv(t.data[i]!);
  return new Uint8Array(out.buffer);
}

/**
 * Writes a safetensors file the way the Python library does (header padded with spaces to 8 bytes,
 * `__metadata__.format = "pt"` so transformers accepts it), atomically through a temporary file. Tensors are
 * encoded one at a time so only one converted copy is alive. Returns the data section's size.
 */
export async function writeSafetensors(path: string, tensors: TensorToWrite[]): Promise<number> {
  const header: Record<string, unknown> = { __metadata__: { format: 'pt' } };
  let offset = 0;
  for (const t of tensors) {
    const bytes = t.data.length * (t.dtype === 'F32' ? 4 : 2);
    header[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - ((json.length + 8) % 8)) % 8);
  const headerBytes = Buffer.from(json, 'utf8');
  const prefix = Buffer.alloc(8);
  prefix.writeBigUInt64LE(BigInt(headerBytes.length));

  const tmp = `${path}.tmp-${process.pid}`;
  const fh = await open(tmp, 'w');
  try {
    await fh.write(prefix);
    await fh.write(headerBytes);
    for (const t of tensors) await fh.write(encode(t));
    await fh.sync();
  } finally {
    await fh.close();
  }
  await rename(tmp, path);
  return offset;
}
