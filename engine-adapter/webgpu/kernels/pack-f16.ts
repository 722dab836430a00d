import { Params, type GpuContext, type Recorder } from '../gpu-context.ts';

const URL_ = new URL('./pack-f16.wgsl', import.meta.url);

/** Packs `rows` f32 rows of `cols` from `src` into f16 pairs at word `dstOffset` of `dst`. */
export function recordPackF16(
  ctx: GpuContext,
  rec: Recorder,
  a: { src: GPUBuffer; dst: GPUBuffer; rows: number; cols: number; dstOffset: number },
): void {
  const rowWords = Math.ceil(a.cols / 2);
  const params = new Params().u32(a.rows).u32(a.cols).u32(rowWords).u32(a.dstOffset);
  rec.dispatch(ctx.pipeline({ url: URL_ }), params, [a.src, a.dst], ctx.grid(a.rows * rowWords, 256));
}
