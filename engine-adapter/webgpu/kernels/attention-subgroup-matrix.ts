import { KdnError } from '../../../common/errors.ts';
import type { GpuContext, Recorder } from '../gpu-context.ts';
import { attentionParams, keyEnd, slotBindings } from './attention-params.ts';
import type { AttentionArgs } from './attention.ts';
import { chooseSplits, splitParts } from './attention-splits.ts';

const URL_ = new URL('./attention-subgroup-matrix.wgsl', import.meta.url);
/** Query rows per subgroup (see the WGSL); fewer rows than this (decode) leave the tensor cores mostly idle. */
const ROWS = 16;
const SUBGROUPS = 8;
const WG_ROWS = SUBGROUPS * ROWS;
const BK = 32;
/**
 * Eight-subgroup workgroups to fill an H100-class GPU (132 SMs, about two each); fewer split the keys. A 64-token
 * question of the 8B shape (16 workgroups) takes 0.72 ms a layer in 16 parts against 0.90 in 32 at 8k tokens, and
 * 0.70 against 0.79 at 32k (gpu/profile-question.json, H200; gpu/attention-splits-ab-h200.json has an earlier run).
 */
const TARGET_WORKGROUPS = 256;

/** Workgroup bytes of the WGSL's arrays for head size d: the K and V tile (rows padded by 8) and P in f16, scores
 * and row factors in f32, the rescale flag as a vec4u (16 bytes, for alignment). */
function workgroupBytes(d: number): number {
  return 2 * (2 * BK * (d + 8) + WG_ROWS * BK) + 4 * (WG_ROWS * BK + WG_ROWS + 4);
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
  const slots = slotBindings(a);
  const defines = [
    ...(sm.syntax === 'template-arg' ? ['SGMAT_TEMPLATE'] : []),
    ...(a.headDim === 128 ? ['HEAD_DIM_128'] : []),
    ...slots.defines,
  ];
  const rows = a.tokens * (a.heads / a.kvHeads);
  const grid = [Math.ceil(rows / WG_ROWS), a.kvHeads];
  // A short query over long KV (a question after injected context) would leave most of the GPU idle: split the keys.
  const splits = a.splits ?? chooseSplits(grid[0]! * grid[1]!, keyEnd(a), BK, TARGET_WORKGROUPS);
  const params = attentionParams(a).u32(splits);
  if (splits === 1) {
    rec.dispatch(ctx.pipeline({ url: URL_, defines }), params, [a.q, a.cacheK, a.cacheV, a.out, ...slots.buffers], grid);
    return;
  }
  const part = splitParts(ctx, rec, splits, a.tokens * a.heads, a.headDim);
  rec.dispatch(
    ctx.pipeline({ url: URL_, defines: [...defines, 'SPLIT'] }),
    params,
    [a.q, a.cacheK, a.cacheV, part.acc, part.stats, ...slots.buffers],
    [...grid, splits],
  );
  part.combine(a.out);
}
