import { Params, type GpuContext, type Recorder } from '../gpu-context.ts';

const URL_ = new URL('./kv-write.wgsl', import.meta.url);

/** Writes `tokens` rows of K and V (rowSize = kvHeads * headDim floats) into the caches at token `position`. */
export function recordKvWrite(
  ctx: GpuContext,
  rec: Recorder,
  a: { k: GPUBuffer; v: GPUBuffer; cacheK: GPUBuffer; cacheV: GPUBuffer; tokens: number; rowSize: number; position: number },
): void {
  const count = a.tokens * a.rowSize;
  const params = new Params().u32(count).u32(a.position * a.rowSize);
  rec.dispatch(ctx.pipeline({ url: URL_ }), params, [a.k, a.v, a.cacheK, a.cacheV], ctx.grid(count, 256));
}
