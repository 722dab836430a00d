import { Params, type GpuContext, type Recorder } from '../gpu-context.ts';

const URL_ = new URL('./rope.wgsl', import.meta.url);

/**
 * RoPE in place on x [tokens][heads][headDim] at positions posBase + t, or slots[t] (u32 [tokens]) when given;
 * invFreq [headDim / 2] from ropeInvFreq.
 */
export function recordRope(
  ctx: GpuContext,
  rec: Recorder,
  a: { x: GPUBuffer; invFreq: GPUBuffer; tokens: number; heads: number; headDim: number; posBase: number; slots?: GPUBuffer },
): void {
  const params = new Params().u32(a.tokens).u32(a.heads).u32(a.headDim).u32(a.posBase);
  const pipeline = ctx.pipeline({ url: URL_, defines: a.slots ? ['SLOTS'] : [] });
  const buffers = a.slots ? [a.x, a.invFreq, a.slots] : [a.x, a.invFreq];
  rec.dispatch(pipeline, params, buffers, ctx.grid((a.tokens * a.heads * a.headDim) / 2, 256));
}
