import { KdnError } from '../../../common/errors.ts';
import type { GpuContext, Recorder } from '../gpu-context.ts';
import { attentionParams } from './attention-params.ts';
import type { AttentionArgs } from './attention.ts';

const URL_ = new URL('./attention-subgroup-matrix.wgsl', import.meta.url);
/** Query rows per workgroup (see the WGSL); fewer rows than this (decode) leave the tensor cores mostly idle. */
const ROWS = 16;
const BK = 32;

/** Workgroup bytes of the WGSL's arrays for head size d: Q, K, V and P in f16, scores and row sums in f32. */
function workgroupBytes(d: number): number {
  return 2 * (ROWS * d + 2 * BK * d + ROWS * BK) + 4 * (ROWS * BK + ROWS);
}

/** Whether the tensor-core kernel takes this call: the feature, a head size it is written for, prefill-sized work. */
export function subgroupMatrixAttentionFits(ctx: GpuContext, a: AttentionArgs): boolean {
  return (
    ctx.features.subgroupMatrix !== null &&
    (a.headDim === 64 || a.headDim === 128) &&
    a.heads % a.kvHeads === 0 &&
    a.tokens * (a.heads / a.kvHeads) >= ROWS &&
    workgroupBytes(a.headDim) <= ctx.limits.maxComputeWorkgroupStorageSize
  );
}

export function recordAttentionSubgroupMatrix(ctx: GpuContext, rec: Recorder, a: AttentionArgs): void {
  const sm = ctx.features.subgroupMatrix;
  if (sm === null || !subgroupMatrixAttentionFits(ctx, a)) {
    throw new KdnError('INTERNAL', `subgroup-matrix attention cannot take headDim ${a.headDim}, ${a.tokens} tokens on this adapter`);
  }
  const defines = [...(sm.syntax === 'template-arg' ? ['SGMAT_TEMPLATE'] : []), ...(a.headDim === 128 ? ['HEAD_DIM_128'] : [])];
  const params = attentionParams(a);
  const rows = a.tokens * (a.heads / a.kvHeads);
  rec.dispatch(ctx.pipeline({ url: URL_, defines }), params, [a.q, a.cacheK, a.cacheV, a.out], [Math.ceil(rows / ROWS), a.kvHeads]);
}
