import { Params, type BufferSlice, type GpuContext, type Recorder } from '../gpu-context.ts';

const URL_ = new URL('./kv-dequant-fp16.wgsl', import.meta.url);

export interface KvDequantFp16Args {
  /** The fp16 layer block's bytes as uploaded (keys then values, 2n halves). */
  src: GPUBuffer | BufferSlice;
  keys: GPUBuffer;
  values: GPUBuffer;
  /** Elements per tensor: tokens * kvHeads * headDim. */
  n: number;
  /** Float index in the caches where the block's first element goes. */
  dstOffset: number;
}

/** Expands an uploaded fp16 layer block into a layer's f32 key and value caches. */
export function recordKvDequantFp16(ctx: GpuContext, rec: Recorder, a: KvDequantFp16Args): void {
  const params = new Params().u32(a.n).u32(a.dstOffset);
  rec.dispatch(ctx.pipeline({ url: URL_ }), params, [a.src, a.keys, a.values], ctx.grid(a.n, 256));
}
