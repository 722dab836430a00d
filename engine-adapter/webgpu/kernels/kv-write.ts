import { Params, type GpuContext, type Recorder, type Binding } from '../gpu-context.ts';

const URL_ = new URL('./kv-write.wgsl', import.meta.url);

/**
 * Writes `tokens` rows of K and V (rowSize = kvHeads * headDim floats) into the caches at tokens `position`.., or
 * row t at token slots[t] (u32 [tokens]) when given.
 */
export function recordKvWrite(
  ctx: GpuContext,
  rec: Recorder,
  a: {
    k: GPUBuffer;
    v: GPUBuffer;
    cacheK: Binding;
    cacheV: Binding;
    tokens: number;
    rowSize: number;
    position: number;
    slots?: GPUBuffer;
  },
): void {
  const count = a.tokens * a.rowSize;
  const params = new Params()
    .u32(count)
    .u32(a.position * a.rowSize)
    .u32(a.rowSize);
  const pipeline = ctx.pipeline({ url: URL_, defines: a.slots ? ['SLOTS'] : [] });
  const buffers = [a.k, a.v, a.cacheK, a.cacheV, ...(a.slots ? [a.slots] : [])];
  rec.dispatch(pipeline, params, buffers, ctx.grid(count, 256));
}
