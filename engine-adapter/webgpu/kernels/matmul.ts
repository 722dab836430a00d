import { KdnError } from '../../../common/errors.ts';
import type { GpuContext, Recorder } from '../gpu-context.ts';
import type { GpuMatrix } from '../gpu-matrix.ts';
import { planMatmulSubgroupMatrix, recordMatmulSubgroupMatrix, subgroupMatrixMatmulFits } from './matmul-subgroup-matrix.ts';
import { intoDefines, type MatmulInto } from './matmul-into.ts';
import { kSplitFor, matmulParams, recordSplitMatmul, type SplitPlan } from './matmul-split.ts';

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
  /** How the product meets what y holds (matmul-into.ts); default: replaces it. */
  into?: MatmulInto;
  /** Parts K is cut into (split-K); default: chosen from the grid size. */
  kParts?: number;
}

/** Tiled workgroups (256 threads) that keep a large GPU busy; fewer split K. */
const TILED_TARGET_WORKGROUPS = 264;
const TILED_TK = 16;

/** y = x W^T (+ bias): matvec for decode-sized m, else the tensor cores where the adapter has them, else tiles. */
export function recordMatmul(ctx: GpuContext, rec: Recorder, a: MatmulArgs): void {
  if (a.m <= MATVEC_MAX_ROWS) recordMatvec(ctx, rec, a);
  else if (subgroupMatrixMatmulFits(ctx, a)) recordMatmulSubgroupMatrix(ctx, rec, a);
  else recordMatmulTiled(ctx, rec, a);
}

/** The tiled kernel, grid and K split recordMatmul would run this product with; null where it runs matvec. */
export function planMatmul(ctx: GpuContext, a: Pick<MatmulArgs, 'w' | 'm' | 'kParts'>): SplitPlan | null {
  if (a.m <= MATVEC_MAX_ROWS) return null;
  return subgroupMatrixMatmulFits(ctx, a) ? planMatmulSubgroupMatrix(ctx, a) : planMatmulTiled(a);
}

function planMatmulTiled(a: Pick<MatmulArgs, 'w' | 'm' | 'kParts'>): SplitPlan {
  if (a.w.layout !== 'rows') throw new KdnError('INTERNAL', `the tiled matmul reads row-major weights, not ${a.w.layout}`);
  const grid: [number, number] = [Math.ceil(a.w.rows / 64), Math.ceil(a.m / 64)];
  const split = kSplitFor(a, grid[0] * grid[1], TILED_TK, TILED_TARGET_WORKGROUPS);
  return { kernel: { url: TILED, defines: a.w.f16 ? ['F16_WEIGHTS'] : [] }, grid, split };
}

export function recordMatmulTiled(ctx: GpuContext, rec: Recorder, a: MatmulArgs): void {
  recordSplitMatmul(ctx, rec, a, planMatmulTiled(a));
}

export function recordMatvec(ctx: GpuContext, rec: Recorder, a: MatmulArgs): void {
  const defines = [...(a.w.f16 ? ['F16_WEIGHTS'] : []), ...(a.w.layout === 'blocks' ? ['W_BLOCKS'] : []), ...intoDefines(a.into)];
  const pipeline = ctx.pipeline({ url: MATVEC, defines });
  const groups = Math.ceil(a.w.rows / 8);
  const max = ctx.limits.maxComputeWorkgroupsPerDimension;
  if (a.m > max) throw new KdnError('INTERNAL', `matvec over ${a.m} rows`);
  // Large vocabularies can exceed the per-dimension limit: spill the columns over z.
  const x = Math.min(groups, max);
  rec.dispatch(pipeline, matmulParams(a), [a.x, a.w.buffer, a.bias ?? ctx.dummy, a.y], [x, a.m, Math.ceil(groups / x)]);
}
