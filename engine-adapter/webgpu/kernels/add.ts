import { Params, type Binding, type GpuContext, type Recorder } from '../gpu-context.ts';

const URL_ = new URL('./add.wgsl', import.meta.url);

/** x += y over `count` elements, in place in `x`. */
export function recordAdd(ctx: GpuContext, rec: Recorder, a: { x: Binding; y: Binding; count: number }): void {
  rec.dispatch(ctx.pipeline({ url: URL_ }), new Params().u32(a.count), [a.x, a.y], ctx.grid(a.count, 256));
}
