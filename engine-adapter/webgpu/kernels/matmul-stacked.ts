/**
 * Products that read the same x, over weights stacked row-wise (stacked-matrix.ts): q, k and v; gate and up. Where
 * recordMatmul would split the stack's product over K (a question's rows against the model's width:
 * matmul-split.ts), it runs as one split product, and its reduction stores each output where its part goes: q, k
 * and v each to its own buffer, or gate and up paired through SwiGLU. That is one matmul and one reduction where the
 * parts took one of each: x read once, and the parts of the narrow k and v no longer split many ways to fill the
 * GPU. Otherwise (decode's matvec; long prefill chunks, whose grid fills the GPU unsplit; weights not stacked) each
 * part runs as its own matmul over its view of the stack, as before.
 *
 * A layer's q|k|v product can also finish its KV step in the reduction (recordQkvIntoCache): RoPE on q and k, and k
 * and v written into the layer's caches, where the rope and kv-write kernels took three more dispatches.
 */
import { KdnError } from '../../../common/errors.ts';
import { Params, type Binding, type GpuContext, type Recorder } from '../gpu-context.ts';
import type { StackedMatrix, StackedPart } from '../stacked-matrix.ts';
import { planMatmul, recordMatmul } from './matmul.ts';
import { recordSplitParts, type SplitPlan } from './matmul-split.ts';

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

/**
 * The plan under which the stack's product runs as one split product, or null where it runs part by part: parts in
 * buffers of their own, or a product that would not split (decode, long prefill chunks).
 */
export function planStacked(ctx: GpuContext, w: StackedMatrix, m: number, kParts?: number): SplitPlan | null {
  if (w.whole === null) return null;
  const plan = planMatmul(ctx, { w: w.whole.w, m, kParts });
  return plan !== null && plan.split.parts >= 2 ? plan : null;
}

export function recordStackedMatmul(ctx: GpuContext, rec: Recorder, a: StackedMatmulArgs): void {
  const parts = a.w.parts;
  const expected = a.out.kind === 'columns' ? 3 : 2;
  if (parts.length !== expected) throw new KdnError('INTERNAL', `a ${a.out.kind} stack of ${parts.length} parts, not ${expected}`);
  if (a.out.kind === 'swiglu' && parts[0]!.w.rows !== parts[1]!.w.rows) throw new KdnError('INTERNAL', 'gate and up of different widths');
  const plan = planStacked(ctx, a.w, a.m, a.kParts);
  if (plan === null) {
    recordPartByPart(ctx, rec, a);
    return;
  }
  const whole = a.w.whole!;
  const part = recordSplitParts(ctx, rec, { x: a.x, w: whole.w, bias: whole.bias, m: a.m }, plan);
  const params = reduceParams(a.w, a.m, plan);
  if (a.out.kind === 'columns') {
    const pipeline = ctx.pipeline({ url: REDUCE, defines: ['COLUMNS'] });
    rec.dispatch(pipeline, params, [part, ...a.out.ys], ctx.grid(a.m * whole.w.rows, 256));
  } else {
    const pipeline = ctx.pipeline({ url: REDUCE });
    rec.dispatch(pipeline, params, [part, a.out.y], ctx.grid((a.m * whole.w.rows) / 2, 256));
  }
}

export interface QkvIntoCacheArgs {
  /** [m][k] */
  x: GPUBuffer;
  /** q, k and v stacked, k and v of one width. */
  w: StackedMatrix;
  m: number;
  /** From planStacked for this stack and m. */
  plan: SplitPlan;
  /** Receives the rotated queries, [m][q rows]. */
  q: GPUBuffer;
  /** The layer's caches, [tokens][k rows]: row t's key (rotated) and value go to token position + t, or slots[t]. */
  cacheK: Binding;
  cacheV: Binding;
  invFreq: GPUBuffer;
  headDim: number;
  position: number;
  /** u32 [m], ascending. */
  slots?: GPUBuffer;
}

/** q|k|v as one split product whose reduction rotates q and k and writes k and v into the caches (see above). */
export function recordQkvIntoCache(ctx: GpuContext, rec: Recorder, a: QkvIntoCacheArgs): void {
  const [q, k, v] = a.w.parts;
  if (a.w.whole === null || !q || !k || !v || a.w.parts.length !== 3 || k.w.rows !== v.w.rows) {
    throw new KdnError('INTERNAL', 'recordQkvIntoCache takes q, k and v stacked in one buffer, k and v of one width');
  }
  if (q.w.rows % a.headDim !== 0 || k.w.rows % a.headDim !== 0 || a.headDim % 2 !== 0) {
    throw new KdnError('INTERNAL', `q and k rows (${q.w.rows}, ${k.w.rows}) are not whole heads of ${a.headDim}`);
  }
  const part = recordSplitParts(ctx, rec, { x: a.x, w: a.w.whole.w, bias: a.w.whole.bias, m: a.m }, a.plan);
  const params = reduceParams(a.w, a.m, a.plan, a);
  const pipeline = ctx.pipeline({ url: REDUCE, defines: ['ROPE_KV', ...(a.slots ? ['SLOTS'] : [])] });
  const buffers = [part, a.q, a.cacheK, a.cacheV, a.invFreq, ...(a.slots ? [a.slots] : [])];
  rec.dispatch(pipeline, params, buffers, ctx.grid((a.m * a.w.whole.w.rows) / 2, 256));
}

/** The reduction's rows, width, K parts and the ends of its first two parts; RoPE's head size and first position. */
function reduceParams(w: StackedMatrix, m: number, plan: SplitPlan, rope = { headDim: 0, position: 0 }): Params {
  const [first, second] = w.parts as [StackedPart, StackedPart];
  return new Params()
    .u32(m)
    .u32(w.whole!.w.rows)
    .u32(plan.split.parts)
    .u32(first.w.rows)
    .u32(first.w.rows + second.w.rows)
    .u32(rope.headDim)
    .u32(rope.position);
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
