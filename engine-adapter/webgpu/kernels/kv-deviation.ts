import { Params, type GpuContext, type Recorder, type Binding } from '../gpu-context.ts';

const URL_ = new URL('./kv-deviation.wgsl', import.meta.url);

/**
 * out[outOffset + t] = |k[t] - cacheK[position + t]|^2 + |v[t] - cacheV[position + t]|^2 for `rows` rows of
 * rowSize = kvHeads * headDim floats: how far each token's fresh K/V moved from the injected K/V at its slot. With
 * `slots` (u32 [rows]) row t sits at slots[t] instead of position + t.
 */
export function recordKvDeviation(
  ctx: GpuContext,
  rec: Recorder,
  a: {
    k: GPUBuffer;
    v: GPUBuffer;
    cacheK: Binding;
    cacheV: Binding;
    rows: number;
    rowSize: number;
    position: number;
    out: GPUBuffer;
    outOffset: number;
    slots?: GPUBuffer;
  },
): void {
  const params = new Params().u32(a.rows).u32(a.rowSize).u32(a.position).u32(a.outOffset);
  const pipeline = ctx.pipeline({ url: URL_, defines: a.slots ? ['SLOTS'] : [] });
  const buffers = [a.k, a.v, a.cacheK, a.cacheV, a.out, ...(a.slots ? [a.slots] : [])];
  rec.dispatch(pipeline, params, buffers, ctx.grid(a.rows, 1));
}
