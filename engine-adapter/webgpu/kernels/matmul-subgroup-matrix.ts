import { KdnError } from '../../../common/errors.ts';
import type { GpuContext, Recorder } from '../gpu-context.ts';
import type { MatmulArgs } from './matmul.ts';
import { kSplitFor, recordSplitMatmul } from './matmul-split.ts';

const URL_ = new URL('./matmul-subgroup-matrix.wgsl', import.meta.url);
/** One-subgroup workgroups that fill an H100-class GPU (132 SMs, several subgroups each); fewer split K. */
const TARGET_WORKGROUPS = 1024;
/** The output tile (rows of x by rows of W) and K step of the WGSL. */
const TM = 32;
const TN = 32;
const TK = 32;

/** Whether the tensor-core kernel can take this product: the feature, f16 weights, and K in whole 32-steps. */
export function subgroupMatrixMatmulFits(ctx: GpuContext, a: MatmulArgs): boolean {
  return ctx.features.subgroupMatrix !== null && a.w.f16 && a.w.cols % TK === 0;
}

/** y = x W^T (+ bias) on the tensor cores (see the WGSL); callers check subgroupMatrixMatmulFits first. */
export function recordMatmulSubgroupMatrix(ctx: GpuContext, rec: Recorder, a: MatmulArgs): void {
  const sm = ctx.features.subgroupMatrix;
  if (sm === null || !subgroupMatrixMatmulFits(ctx, a)) {
    throw new KdnError('INTERNAL', `subgroup-matrix matmul cannot take k=${a.w.cols} (${a.w.f16 ? 'f16' : 'f32'} weights) on this adapter`);
  }
  const grid: [number, number] = [Math.ceil(a.w.rows / TN), Math.ceil(a.m / TM)];
  // A short question's rows make few tiles: split K so the grid still fills the GPU.
  const split = kSplitFor(a, grid[0] * grid[1], TK, TARGET_WORKGROUPS);
  recordSplitMatmul(ctx, rec, a, { url: URL_, defines: sm.syntax === 'template-arg' ? ['SGMAT_TEMPLATE'] : [] }, grid, split);
}
