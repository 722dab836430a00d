import { Params, type GpuContext, type Recorder } from '../gpu-context.ts';

const URL_ = new URL('./gather-rows.wgsl', import.meta.url);

/** out[i][:] = x[rows[i]][:] for `count` rows (u32 indices) of `cols` floats. */
export function recordGatherRows(
  ctx: GpuContext,
  rec: Recorder,
  a: { x: GPUBuffer; rows: GPUBuffer; out: GPUBuffer; count: number; cols: number },
): void {
  const params = new Params().u32(a.count * a.cols).u32(a.cols);
  rec.dispatch(ctx.pipeline({ url: URL_ }), params, [a.x, a.rows, a.out], ctx.grid(a.count * a.cols, 256));
}
