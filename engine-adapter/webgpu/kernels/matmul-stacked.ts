/**
 * Products that read the same x, over weights stacked row-wise (stacked-matrix.ts): q, k and v; gate and up. Where
 * recordMatmul would split the stack's product over K (a question's rows against the model's width:
 * matmul-split.ts), it runs as one split product, and its reduction stores each output where its part goes: q, k
 * and v each to its own buffer, or gate and up paired through SwiGLU. That is one matmul and one reduction where the
 * parts took one of each: x read once, and the parts of the narrow k and v no longer split many ways to fill the
 * GPU. Otherwise (decode's matvec; long prefill chunks, whose grid fills the GPU unsplit; weights not stacked) each
 * part runs as its own matmul over its view of the stack, as before.
 */
import { KdnError } from '../../../common/errors.ts';
import { Params, type GpuContext, type Recorder } from '../gpu-context.ts';
import type { StackedMatrix, StackedPart } from '../stacked-matrix.ts';
import { planMatmul, recordMatmul } from './matmul.ts';
import { recordSplitParts } from './matmul-split.ts';

const REDUCE = new URL('./matmul-stacked-reduce.wgsl', import.meta.url);

/** Where the stack's product goes: q, k and v each to its buffer ([m][part rows]), or silu(gate) * up to y. */
export type StackedOut = { kind: 'columns'; ys: [GPUBuffer, GPUBuffer, GPUBuffer] } | { kind: 'swiglu'; y: GPUBuffer };

export interface StackedMatmulArgs {
  /** [m][k] */
  x: GPUBuffer;
  w: StackedMatrix;
  m: number;
  out: StackedOut;
  /** Parts K is cut into (split-K); default: chosen from the grid size. */
  kParts?: number;
}

export function recordStackedMatmul(ctx: GpuContext, rec: Recorder, a: StackedMatmulArgs): void {
  const parts = a.w.parts;
  const expected = a.out.kind === 'columns' ? 3 : 2;
  if (parts.length !== expected) throw new KdnError('INTERNAL', `a ${a.out.kind} stack of ${parts.length} parts, not ${expected}`);
  if (a.out.kind === 'swiglu' && parts[0]!.w.rows !== parts[1]!.w.rows) throw new KdnError('INTERNAL', 'gate and up of different widths');
  const whole = a.w.whole;
  const plan = whole === null ? null : planMatmul(ctx, { w: whole.w, m: a.m, kParts: a.kParts });
  if (whole === null || plan === null || plan.split.parts < 2) {
    recordPartByPart(ctx, rec, a);
    return;
  }
  const part = recordSplitParts(ctx, rec, { x: a.x, w: whole.w, bias: whole.bias, m: a.m }, plan);
  const width = whole.w.rows;
  const split0 = parts[0]!.w.rows;
  const params = new Params()
    .u32(a.m)
    .u32(width)
    .u32(plan.split.parts)
    .u32(split0)
    .u32(split0 + parts[1]!.w.rows);
  if (a.out.kind === 'columns') {
    const pipeline = ctx.pipeline({ url: REDUCE, defines: ['COLUMNS'] });
    rec.dispatch(pipeline, params, [part, ...a.out.ys], ctx.grid(a.m * width, 256));
  } else {
    const pipeline = ctx.pipeline({ url: REDUCE });
    rec.dispatch(pipeline, params, [part, a.out.y], ctx.grid((a.m * width) / 2, 256));
  }
}

/** Each part's product on its own, over its view of the stack (or its own buffer). */
function recordPartByPart(ctx: GpuContext, rec: Recorder, a: StackedMatmulArgs): void {
  const common = { x: a.x, m: a.m, kParts: a.kParts };
  if (a.out.kind === 'columns') {
    for (const [i, p] of a.w.parts.entries()) recordMatmul(ctx, rec, { ...common, w: p.w, bias: p.bias, y: a.out.ys[i]! });
    return;
  }
  const [gate, up] = a.w.parts as [StackedPart, StackedPart];
  recordMatmul(ctx, rec, { ...common, w: gate.w, bias: gate.bias, y: a.out.y });
  recordMatmul(ctx, rec, { ...common, w: up.w, bias: up.bias, y: a.out.y, into: 'swiglu' });
}
