import { Params, type GpuContext, type Recorder } from '../gpu-context.ts';

const URL_ = new URL('./kv-dequant-int.wgsl', import.meta.url);

/** Byte offsets of an int8/int4 layer block's sections (storage/kv-object/codecs/quantized.ts), 4-byte aligned. */
export interface QuantizedSections {
  keyScale: number;
  keyMin: number;
  keyCodes: number;
  valueScale: number;
  valueMin: number;
  valueCodes: number;
  /** Bytes of the whole block. */
  total: number;
}

export interface KvDequantIntArgs {
  bits: 8 | 4;
  /** The layer block's bytes as uploaded. */
  src: GPUBuffer;
  sections: QuantizedSections;
  keys: GPUBuffer;
  values: GPUBuffer;
  tokens: number;
  /** kvHeads * headDim. */
  channels: number;
  groupSize: number;
  /** Float index in the caches where the block's first element goes. */
  dstOffset: number;
}

function align4(n: number): number {
  return (n + 3) & ~3;
}

/** The section layout documented in storage/kv-object/codecs/int8.ts (int4: codes packed two per byte). */
export function quantizedSections(bits: 8 | 4, tokens: number, channels: number, groupSize: number): QuantizedSections {
  const n = tokens * channels;
  const keyParams = align4(2 * Math.ceil(tokens / groupSize) * channels);
  const valueParams = align4(2 * tokens * Math.ceil(channels / groupSize));
  const codes = align4(bits === 8 ? n : Math.ceil(n / 2));
  const keyScale = 0;
  const keyMin = keyScale + keyParams;
  const keyCodes = keyMin + keyParams;
  const valueScale = keyCodes + codes;
  const valueMin = valueScale + valueParams;
  const valueCodes = valueMin + valueParams;
  return { keyScale, keyMin, keyCodes, valueScale, valueMin, valueCodes, total: valueCodes + codes };
}

/** Dequantizes an uploaded int8/int4 layer block into a layer's f32 key and value caches. */
export function recordKvDequantInt(ctx: GpuContext, rec: Recorder, a: KvDequantIntArgs): void {
  const s = a.sections;
  const n = a.tokens * a.channels;
  const params = new Params()
    .u32(n)
    .u32(a.channels)
    .u32(a.groupSize)
    .u32(Math.ceil(a.channels / a.groupSize))
    .u32(s.keyScale)
    .u32(s.keyMin)
    .u32(s.keyCodes)
    .u32(s.valueScale)
    .u32(s.valueMin)
    .u32(s.valueCodes)
    .u32(a.dstOffset);
  const pipeline = ctx.pipeline({ url: URL_, constants: { BITS: a.bits } });
  rec.dispatch(pipeline, params, [a.src, a.keys, a.values], ctx.grid(n, 256));
}
