import { Params, type GpuContext, type Recorder } from '../gpu-context.ts';
import type { MatrixLayout } from '../gpu-matrix.ts';

const URL_ = new URL('./pack-f16.wgsl', import.meta.url);

/** Packs `rows` f32 rows of `cols` from `src` into f16 pairs, as rows `firstRow`.. of `dst` in `layout`. */
export function recordPackF16(
  ctx: GpuContext,
  rec: Recorder,
  a: { src: GPUBuffer; dst: GPUBuffer; rows: number; cols: number; firstRow: number; layout?: MatrixLayout },
): void {
  const rowWords = Math.ceil(a.cols / 2);
  const params = new Params().u32(a.rows).u32(a.cols).u32(rowWords).u32(a.firstRow);
  const pipeline = ctx.pipeline({ url: URL_, defines: a.layout === 'blocks' ? ['BLOCKS'] : [] });
  rec.dispatch(pipeline, params, [a.src, a.dst], ctx.grid(a.rows * rowWords, 256));
}
