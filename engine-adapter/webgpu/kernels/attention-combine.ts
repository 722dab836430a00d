import { Params, type Binding, type GpuContext, type Recorder } from '../gpu-context.ts';

const URL_ = new URL('./attention-combine.wgsl', import.meta.url);

export interface AttentionCombineArgs {
  /** [splits][rows][headDim] unnormalised accumulators. */
  partAcc: GPUBuffer;
  /** [splits][rows][max, sum]. */
  partStats: GPUBuffer;
  /** [rows][headDim] */
  out: Binding;
  /** tokens * heads. */
  rows: number;
  headDim: number;
  splits: number;
}

/** Merges the key-range parts written by split attention into normalised outputs. */
export function recordAttentionCombine(ctx: GpuContext, rec: Recorder, a: AttentionCombineArgs): void {
  const params = new Params().u32(a.rows).u32(a.headDim).u32(a.splits);
  rec.dispatch(ctx.pipeline({ url: URL_ }), params, [a.partAcc, a.partStats, a.out], ctx.grid(a.rows * a.headDim, 256));
}
