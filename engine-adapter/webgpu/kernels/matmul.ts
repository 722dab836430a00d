import { KdnError } from '../../../common/errors.ts';
import { Params, type GpuContext, type Recorder } from '../gpu-context.ts';
import type { GpuMatrix } from '../gpu-matrix.ts';
import { recordMatmulSubgroupMatrix, subgroupMatrixMatmulFits } from './matmul-subgroup-matrix.ts';

const TILED = new URL('./matmul.wgsl', import.meta.url);
const MATVEC = new URL('./matvec.wgsl', import.meta.url);

/** Up to this many rows of x, reading W once per row (matvec) beats the 64-row tiles. */
export const MATVEC_MAX_ROWS = 2;

export interface MatmulArgs {
  /** [m][k] */
  x: GPUBuffer;
  /** [n][k] */
  w: GpuMatrix;
  /** [n], or omitted */
  bias?: GPUBuffer;
  /** [m][n] */
  y: GPUBuffer;
  m: number;
}

function params(a: MatmulArgs): Params {
  return new Params().u32(a.m).u32(a.w.rows).u32(a.w.cols).u32(a.w.rowWords).u32(a.bias ? 1 : 0);
}

/** y = x W^T (+ bias): matvec for decode-sized m, else the tensor cores where the adapter has them, else tiles. */
export function recordMatmul(ctx: GpuContext, rec: Recorder, a: MatmulArgs): void {
  if (a.m <= MATVEC_MAX_ROWS) recordMatvec(ctx, rec, a);
  else if (subgroupMatrixMatmulFits(ctx, a)) recordMatmulSubgroupMatrix(ctx, rec, a);
  else recordMatmulTiled(ctx, rec, a);
}

export function recordMatmulTiled(ctx: GpuContext, rec: Recorder, a: MatmulArgs): void {
  const pipeline = ctx.pipeline({ url: TILED, defines: a.w.f16 ? ['F16_WEIGHTS'] : [] });
  const buffers = [a.x, a.w.buffer, a.bias ?? ctx.dummy, a.y];
  rec.dispatch(pipeline, params(a), buffers, [Math.ceil(a.w.rows / 64), Math.ceil(a.m / 64)]);
}

export function recordMatvec(ctx: GpuContext, rec: Recorder, a: MatmulArgs): void {
  const pipeline = ctx.pipeline({ url: MATVEC, defines: a.w.f16 ? ['F16_WEIGHTS'] : [] });
  const groups = Math.ceil(a.w.rows / 8);
  const max = ctx.limits.maxComputeWorkgroupsPerDimension;
  if (a.m > max) throw new KdnError('INTERNAL', `matvec over ${a.m} rows`);
  // Large vocabularies can exceed the per-dimension limit: spill the columns over z.
  const x = Math.min(groups, max);
  rec.dispatch(pipeline, params(a), [a.x, a.w.buffer, a.bias ?? ctx.dummy, a.y], [x, a.m, Math.ceil(groups / x)]);
}
