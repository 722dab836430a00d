import { KdnError } from '../../../common/errors.ts';
import type { GpuContext, Recorder } from '../gpu-context.ts';
import type { MatmulArgs } from './matmul.ts';
import { recordIntoElementwise } from './matmul-into.ts';
import { kSplitFor, recordSplitMatmul, type SplitPlan } from './matmul-split.ts';

const URL_ = new URL('./matmul-subgroup-matrix.wgsl', import.meta.url);
/** All of a question's rows against 128 columns (see matmul-subgroup-matrix-short.wgsl). */
const SHORT = new URL('./matmul-subgroup-matrix-short.wgsl', import.meta.url);
/**
 * Workgroups of the 128 x 128 kernel that fill an H100-class GPU (132 SMs, two workgroups each); fewer split K. Aiming
 * for 1024 split 1024-row products four ways, and the parts' sums cost more than the extra workgroups gained: the 8B
 * prefill at 1k took 116 ms against 110 with 264, the 1B at 1k and 4k 4-8% longer (H200).
 */
const TARGET_WORKGROUPS = 264;
/** The large kernel's output tile is TILE x TILE, the short one's SHORT_ROWS x TILE; both step K by TK. */
const TILE = 128;
const TK = 32;
/** Up to this many rows of x take the short kernel, which reads each weight once. */
const SHORT_ROWS = 64;
/**
 * Workgroups the short kernel's K split aims for: each part writes all 64 rows' partial sums, traffic comparable to the
 * weights it reads, so fewer parts than the large kernel's (256 did best of 256, 512 and 1024 on the H200's 8B question).
 */
const SHORT_TARGET_WORKGROUPS = 256;

/** Whether the tensor-core kernel can take this product: the feature, f16 weights, and K in whole 32-steps. */
export function subgroupMatrixMatmulFits(ctx: GpuContext, a: Pick<MatmulArgs, 'w'>): boolean {
  return ctx.features.subgroupMatrix !== null && a.w.f16 && a.w.cols % TK === 0;
}

/** The tensor-core kernel, grid and K split for this product; callers check subgroupMatrixMatmulFits first. */
export function planMatmulSubgroupMatrix(ctx: GpuContext, a: Pick<MatmulArgs, 'w' | 'm' | 'kParts'>): SplitPlan {
  const sm = ctx.features.subgroupMatrix;
  if (sm === null || !subgroupMatrixMatmulFits(ctx, a)) {
    throw new KdnError('INTERNAL', `subgroup-matrix matmul cannot take k=${a.w.cols} (${a.w.f16 ? 'f16' : 'f32'} weights) on this adapter`);
  }
  const defines = [...(sm.syntax === 'template-arg' ? ['SGMAT_TEMPLATE'] : []), ...(a.w.layout === 'blocks' ? ['W_BLOCKS'] : [])];
  // Few tiles (a short question's rows, a narrow W): split K so the grid still fills the GPU.
  if (a.m <= SHORT_ROWS) {
    const grid: [number, number] = [Math.ceil(a.w.rows / TILE), 1];
    return { kernel: { url: SHORT, defines }, grid, split: kSplitFor(a, grid[0], TK, SHORT_TARGET_WORKGROUPS) };
  }
  const grid: [number, number] = [Math.ceil(a.w.rows / TILE), Math.ceil(a.m / TILE)];
  return { kernel: { url: URL_, defines }, grid, split: kSplitFor(a, grid[0] * grid[1], TK, TARGET_WORKGROUPS) };
}

/** y = x W^T (+ bias) on the tensor cores (see the WGSL); callers check subgroupMatrixMatmulFits first. */
export function recordMatmulSubgroupMatrix(ctx: GpuContext, rec: Recorder, a: MatmulArgs): void {
  const plan = planMatmulSubgroupMatrix(ctx, a);
  const into = a.into ?? 'replace';
  if (plan.kernel.url === URL_ && plan.split.parts === 1 && into !== 'replace') {
    // This kernel keeps its plain store (see matmul-into.wgsl): the product goes to scratch, then meets y elementwise.
    const product = ctx.scratch('matmul product', a.m * a.w.rows * 4, rec);
    recordSplitMatmul(ctx, rec, { ...a, y: product, into: 'replace' }, plan);
    recordIntoElementwise(ctx, rec, { y: a.y, product, count: a.m * a.w.rows, into });
    return;
  }
  recordSplitMatmul(ctx, rec, a, plan);
}
