/**
 * A product added to the residual stream and then normed: the output projection and the post-attention norm after
 * it. Where the product splits over K (a question's rows: matmul-split.ts), one pass per row sums its parts into the
 * stream and norms the row (matmul-add-norm.wgsl), in place of the split's reduction and a norm pass of its own;
 * otherwise the matmul adds in its store and rmsnorm.wgsl follows.
 */
import { Params, type GpuContext, type Recorder } from '../gpu-context.ts';
import { planMatmul, recordMatmul, type MatmulArgs } from './matmul.ts';
import { recordSplitParts } from './matmul-split.ts';
import { recordRmsNorm } from './rmsnorm.ts';

const URL_ = new URL('./matmul-add-norm.wgsl', import.meta.url);

export interface MatmulAddNormArgs extends Omit<MatmulArgs, 'into'> {
  /** y's rows normed with `weight` ([w.rows]) into `out`, which must not alias y. */
  norm: { weight: GPUBuffer; out: GPUBuffer; eps: number };
}

/** y += x W^T (+ bias), then norm.out = RMSNorm(y) * norm.weight, row by row. */
export function recordMatmulAddNorm(ctx: GpuContext, rec: Recorder, a: MatmulAddNormArgs): void {
  const { norm } = a;
  const plan = planMatmul(ctx, a);
  if (plan === null || plan.split.parts === 1) {
    recordMatmul(ctx, rec, { ...a, into: 'add' });
    recordRmsNorm(ctx, rec, { x: a.y, weight: norm.weight, out: norm.out, rows: a.m, n: a.w.rows, eps: norm.eps });
    return;
  }
  const part = recordSplitParts(ctx, rec, a, plan);
  const params = new Params().u32(a.m).u32(a.w.rows).u32(plan.split.parts).f32(norm.eps);
  rec.dispatch(ctx.pipeline({ url: URL_ }), params, [part, a.y, norm.weight, norm.out], ctx.grid(a.m, 1));
}
