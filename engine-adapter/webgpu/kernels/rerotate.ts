import { Params, type GpuContext, type Recorder } from '../gpu-context.ts';

const URL_ = new URL('./rerotate.wgsl', import.meta.url);

export interface RerotateArgs {
  /** One layer's key cache, [capacity][kvHeads][headDim]. */
  cache: GPUBuffer;
  invFreq: GPUBuffer;
  start: number;
  tokens: number;
  kvHeads: number;
  headDim: number;
  /** 'delta': rotate by `delta` positions (may be negative); 'positions': apply RoPE at positions start + t. */
  mode: { kind: 'delta'; delta: number } | { kind: 'positions' };
}

/** Re-rotates (or first rotates) the keys of tokens [start, start + tokens) in a layer's cache, in place. */
export function recordRerotate(ctx: GpuContext, rec: Recorder, a: RerotateArgs): void {
  const delta = a.mode.kind === 'delta' ? a.mode.delta : 0;
  const posStep = a.mode.kind === 'positions' ? 1 : 0;
  const params = new Params().u32(a.start).u32(a.tokens).u32(a.kvHeads).u32(a.headDim).i32(delta).u32(posStep);
  rec.dispatch(ctx.pipeline({ url: URL_ }), params, [a.cache, a.invFreq], ctx.grid((a.tokens * a.kvHeads * a.headDim) / 2, 256));
}
