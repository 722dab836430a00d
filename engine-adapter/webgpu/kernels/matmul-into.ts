/**
 * How a matmul's finished product meets what y already holds (MatmulArgs.into): the defines that make
 * matmul-into.wgsl's store do it inside a kernel, and the elementwise pass that does it after a kernel that keeps its
 * plain store.
 */
import type { GpuContext, Recorder } from '../gpu-context.ts';
import { recordAdd } from './add.ts';
import { recordSwiglu } from './swiglu.ts';

/**
 * replace: y = product; add: y += product (a residual connection); swiglu: y = silu(y) * product (y holding the gate
 * projection, the product the up projection).
 */
export type MatmulInto = 'replace' | 'add' | 'swiglu';

/** The defines that make matmul-into.wgsl's store meet y as `into` asks. */
export function intoDefines(into: MatmulInto = 'replace'): string[] {
  return into === 'add' ? ['INTO_ADD'] : into === 'swiglu' ? ['INTO_SWIGLU'] : [];
}

/** y met with `product` ([count] each) as `into` asks, by an elementwise kernel. */
export function recordIntoElementwise(
  ctx: GpuContext,
  rec: Recorder,
  a: { y: GPUBuffer; product: GPUBuffer; count: number; into: Exclude<MatmulInto, 'replace'> },
): void {
  if (a.into === 'add') recordAdd(ctx, rec, { x: a.y, y: a.product, count: a.count });
  else recordSwiglu(ctx, rec, { gate: a.y, up: a.product, count: a.count });
}
