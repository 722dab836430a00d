import { Params, type GpuContext, type Recorder } from '../gpu-context.ts';

const URL_ = new URL('./swiglu.wgsl', import.meta.url);

/** gate = silu(gate) * up over `count` elements, in place in `gate`. */
export function recordSwiglu(ctx: GpuContext, rec: Recorder, a: { gate: GPUBuffer; up: GPUBuffer; count: number }): void {
  rec.dispatch(ctx.pipeline({ url: URL_ }), new Params().u32(a.count), [a.gate, a.up], ctx.grid(a.count, 256));
}
