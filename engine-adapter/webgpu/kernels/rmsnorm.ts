import { Params, type GpuContext, type Recorder } from '../gpu-context.ts';

const URL_ = new URL('./rmsnorm.wgsl', import.meta.url);

/** RMSNorm of `rows` rows of length `n` with weight [n]; `out` must not alias `x`. */
export function recordRmsNorm(
  ctx: GpuContext,
  rec: Recorder,
  a: { x: GPUBuffer; weight: GPUBuffer; out: GPUBuffer; rows: number; n: number; eps: number },
): void {
  const params = new Params().u32(a.rows).u32(a.n).f32(a.eps);
  rec.dispatch(ctx.pipeline({ url: URL_ }), params, [a.x, a.weight, a.out], ctx.grid(a.rows, 1));
}
