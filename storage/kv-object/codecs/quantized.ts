import { KdnError } from '../../../common/errors.ts';
import type { KVLayerTensors } from '../types.ts';
import { fromHalfBits, toHalfBitsDown, toHalfBitsUp } from '../half.ts';
import { align4, type LayerCodec, type LayerShape } from './codec.ts';

/**
 * KIVI-style asymmetric (min/max) quantization shared by int8 and int4; the layout is documented in ./int8.ts.
 * Keys are grouped per channel over `groupSize` tokens (keys have per-channel outliers, so a channel's own range
 * keeps the others precise); values are grouped per token over `groupSize` channels.
 *
 * Per group with range [lo, hi]: min = lo rounded down to a half, scale = (hi - min) / L rounded up to a half,
 * code = round((x - min) / scale) in [0, L], x' = min + code * scale. Rounding min down and scale up keeps every
 * x inside [min, min + L * scale], so |x - x'| <= scale / 2 with no clamping error.
 */

export type CodeBits = 8 | 4;

/** Byte offsets of a layer block's sections (see ./int8.ts), each 4-byte aligned; engines read blocks by them. */
export interface QuantizedSections {
  keyGroups: number;
  valueGroups: number;
  keyScale: number;
  keyMin: number;
  keyCodes: number;
  valueScale: number;
  valueMin: number;
  valueCodes: number;
  total: number;
}

export function quantizedSections(shape: LayerShape, bits: CodeBits, groupSize: number): QuantizedSections {
  const channels = shape.kvHeads * shape.headDim;
  const n = shape.tokens * channels;
  const keyGroups = Math.ceil(shape.tokens / groupSize);
  const valueGroups = Math.ceil(channels / groupSize);
  const keyParams = align4(2 * keyGroups * channels);
  const valueParams = align4(2 * shape.tokens * valueGroups);
  const codes = align4(bits === 8 ? n : Math.ceil(n / 2));
  const keyScale = 0;
  const keyMin = keyScale + keyParams;
  const keyCodes = keyMin + keyParams;
  const valueScale = keyCodes + codes;
  const valueMin = valueScale + valueParams;
  const valueCodes = valueMin + valueParams;
  return { keyGroups, valueGroups, keyScale, keyMin, keyCodes, valueScale, valueMin, valueCodes, total: valueCodes + codes };
}

function writeU16(dst: Uint8Array, offset: number, v: number): void {
  dst[offset] = v & 0xff;
  dst[offset + 1] = v >>> 8;
}

function readHalf(src: Uint8Array, offset: number): number {
  return fromHalfBits(src[offset]! | (src[offset + 1]! << 8));
}

/** Min and scale (as half bits) for a group spanning [lo, hi], per the rounding rule above. */
function groupParams(lo: number, hi: number, levels: number): { minBits: number; scaleBits: number } {
  const minBits = toHalfBitsDown(lo);
  const scaleBits = toHalfBitsUp((hi - fromHalfBits(minBits)) / levels);
  return { minBits, scaleBits };
}

function writeCode(dst: Uint8Array, base: number, i: number, code: number, bits: CodeBits): void {
  if (bits === 8) dst[base + i] = code;
  else dst[base + (i >>> 1)]! |= (i & 1) === 0 ? code : code << 4;
}

function readCode(src: Uint8Array, base: number, i: number, bits: CodeBits): number {
  if (bits === 8) return src[base + i]!;
  const byte = src[base + (i >>> 1)]!;
  return (i & 1) === 0 ? byte & 0x0f : byte >>> 4;
}

function quantize(x: number, min: number, inverseScale: number, levels: number): number {
  const q = Math.round((x - min) * inverseScale);
  return q < 0 ? 0 : Math.min(q, levels);
}

/** int8 or int4 with one group size; stateless apart from its parameters. */
export class QuantizedCodec implements LayerCodec {
  private readonly levels: number;

  constructor(
    readonly bits: CodeBits,
    readonly groupSize: number,
  ) {
    this.levels = (1 << bits) - 1;
  }

  expectedSize(shape: LayerShape): number {
    return quantizedSections(shape, this.bits, this.groupSize).total;
  }

  encode(layer: KVLayerTensors, shape: LayerShape): Uint8Array {
    const s = quantizedSections(shape, this.bits, this.groupSize);
    const out = new Uint8Array(s.total);
    this.encodeKeys(layer.keys, shape, s, out);
    this.encodeValues(layer.values, shape, s, out);
    return out;
  }

  decode(bytes: Uint8Array, shape: LayerShape): KVLayerTensors {
    const { bits, groupSize } = this;
    const s = quantizedSections(shape, bits, groupSize);
    if (bytes.length !== s.total) {
      throw new KdnError('KV_CORRUPT', `int${bits} block is ${bytes.length} bytes, expected ${s.total}`);
    }
    const channels = shape.kvHeads * shape.headDim;
    const n = shape.tokens * channels;
    const keys = new Float32Array(n);
    const values = new Float32Array(n);
    for (let t = 0; t < shape.tokens; t++) {
      const g = Math.floor(t / groupSize);
      for (let c = 0, i = t * channels; c < channels; c++, i++) {
        const p = 2 * (g * channels + c);
        keys[i] = readHalf(bytes, s.keyMin + p) + readCode(bytes, s.keyCodes, i, bits) * readHalf(bytes, s.keyScale + p);
      }
      for (let c = 0, i = t * channels; c < channels; c++, i++) {
        const p = 2 * (t * s.valueGroups + Math.floor(c / groupSize));
        values[i] = readHalf(bytes, s.valueMin + p) + readCode(bytes, s.valueCodes, i, bits) * readHalf(bytes, s.valueScale + p);
      }
    }
    return { keys, values };
  }

  private encodeKeys(keys: Float32Array, shape: LayerShape, s: QuantizedSections, out: Uint8Array): void {
    const { bits, groupSize, levels } = this;
    const channels = shape.kvHeads * shape.headDim;
    const lo = new Float64Array(channels);
    const hi = new Float64Array(channels);
    const min = new Float64Array(channels);
    const inv = new Float64Array(channels);
    for (let g = 0; g < s.keyGroups; g++) {
      const t0 = g * groupSize;
      const t1 = Math.min(t0 + groupSize, shape.tokens);
      lo.fill(Infinity);
      hi.fill(-Infinity);
      for (let t = t0; t < t1; t++) {
        for (let c = 0, i = t * channels; c < channels; c++, i++) {
          const x = keys[i]!;
          if (x < lo[c]!) lo[c] = x;
          if (x > hi[c]!) hi[c] = x;
        }
      }
      for (let c = 0; c < channels; c++) {
        const { minBits, scaleBits } = groupParams(lo[c]!, hi[c]!, levels);
        const p = 2 * (g * channels + c);
        writeU16(out, s.keyMin + p, minBits);
        writeU16(out, s.keyScale + p, scaleBits);
        min[c] = fromHalfBits(minBits);
        const scale = fromHalfBits(scaleBits);
        inv[c] = scale > 0 ? 1 / scale : 0;
      }
      for (let t = t0; t < t1; t++) {
        for (let c = 0, i = t * channels; c < channels; c++, i++) {
          writeCode(out, s.keyCodes, i, quantize(keys[i]!, min[c]!, inv[c]!, levels), bits);
        }
      }
    }
  }

  private encodeValues(values: Float32Array, shape: LayerShape, s: QuantizedSections, out: Uint8Array): void {
    const { bits, groupSize, levels } = this;
    const channels = shape.kvHeads * shape.headDim;
    for (let t = 0; t < shape.tokens; t++) {
      for (let g = 0; g < s.valueGroups; g++) {
        const i0 = t * channels + g * groupSize;
        const i1 = t * channels + Math.min((g + 1) * groupSize, channels);
        let lo = Infinity;
        let hi = -Infinity;
        for (let i = i0; i < i1; i++) {
          const x = values[i]!;
          if (x < lo) lo = x;
          if (x > hi) hi = x;
        }
        const { minBits, scaleBits } = groupParams(lo, hi, levels);
        const p = 2 * (t * s.valueGroups + g);
        writeU16(out, s.valueMin + p, minBits);
        writeU16(out, s.valueScale + p, scaleBits);
        const min = fromHalfBits(minBits);
        const scale = fromHalfBits(scaleBits);
        const inv = scale > 0 ? 1 / scale : 0;
        for (let i = i0; i < i1; i++) writeCode(out, s.valueCodes, i, quantize(values[i]!, min, inv, levels), bits);
      }
    }
  }
}
