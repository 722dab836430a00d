import type { QuantizedSections } from '../../../storage/kv-object/index.ts';
import { Params, type BufferSlice, type GpuContext, type Recorder } from '../gpu-context.ts';

const URL_ = new URL('./kv-dequant-int.wgsl', import.meta.url);

export interface KvDequantIntArgs {
  bits: 8 | 4;
  /** The layer block's bytes as uploaded. */
  src: GPUBuffer | BufferSlice;
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
