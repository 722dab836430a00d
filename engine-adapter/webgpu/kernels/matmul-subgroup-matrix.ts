import { KdnError } from '../../../common/errors.ts';
import { Params, type GpuContext, type Recorder } from '../gpu-context.ts';
import type { MatmulArgs } from './matmul.ts';

const URL_ = new URL('./matmul-subgroup-matrix.wgsl', import.meta.url);

/** Whether the tensor-core kernel can take this product: the feature, f16 weights, and K in whole 32-steps. */
export function subgroupMatrixMatmulFits(ctx: GpuContext, a: MatmulArgs): boolean {
  return ctx.features.subgroupMatrix !== null && a.w.f16 && a.w.cols % 32 === 0;
}

/** y = x W^T (+ bias) on the tensor cores (see the WGSL); callers check subgroupMatrixMatmulFits first. */
export function recordMatmulSubgroupMatrix(ctx: GpuContext, rec: Recorder, a: MatmulArgs): void {
  const sm = ctx.features.subgroupMatrix;
  if (sm === null || !subgroupMatrixMatmulFits(ctx, a)) {
    throw new KdnError('INTERNAL', `subgroup-matrix matmul cannot take k=${a.w.cols} (${a.w.f16 ? 'f16' : 'f32'} weights) on this adapter`);
  }
  const pipeline = ctx.pipeline({ url: URL_, defines: sm.syntax === 'template-arg' ? ['SGMAT_TEMPLATE'] : [] });
  const params = new Params().u32(a.m).u32(a.w.rows).u32(a.w.cols).u32(a.w.rowWords).u32(a.bias ? 1 : 0);
  rec.dispatch(pipeline, params, [a.x, a.w.buffer, a.bias ?? ctx.dummy, a.y], [Math.ceil(a.w.rows / 32), Math.ceil(a.m / 32)]);
}
