import { Params, type GpuContext, type Recorder } from '../gpu-context.ts';

const URL_ = new URL('./rope.wgsl', import.meta.url);

/** RoPE in place on x [tokens][heads][headDim] at positions posBase + t; invFreq [headDim / 2] from ropeInvFreq. */
export function recordRope(
  ctx: GpuContext,
  rec: Recorder,
  a: { x: GPUBuffer; invFreq: GPUBuffer; tokens: number; heads: number; headDim: number; posBase: number },
): void {
  const params = new Params().u32(a.tokens).u32(a.heads).u32(a.headDim).u32(a.posBase);
  rec.dispatch(ctx.pipeline({ url: URL_ }), params, [a.x, a.invFreq], ctx.grid((a.tokens * a.heads * a.headDim) / 2, 256));
}
