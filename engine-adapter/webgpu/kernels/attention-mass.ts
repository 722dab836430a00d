import { Params, type GpuContext, type Recorder, type Binding } from '../gpu-context.ts';

const STATS_URL = new URL('./attention-mass-stats.wgsl', import.meta.url);
const MASS_URL = new URL('./attention-mass.wgsl', import.meta.url);

export interface AttentionMassArgs {
  /** [rows][heads][headDim] after RoPE: the query rows, at positions posBase.. */
  q: GPUBuffer;
  rows: number;
  posBase: number;
  /** One layer's key cache (after RoPE). */
  cacheK: Binding;
  heads: number;
  kvHeads: number;
  headDim: number;
  window: number | null;
  /** out[r] for the key at position + r, r < keys. */
  out: GPUBuffer;
  position: number;
  keys: number;
}

/**
 * How much `rows` query rows attend to each key at position..: the sum over the rows and query heads of its softmax
 * probability, divided by rows * heads (cpu/kernels/attention-mass.ts is the reference). Two passes: each
 * (row, head)'s softmax normaliser, then one thread per key.
 */
export function recordAttentionMass(ctx: GpuContext, rec: Recorder, a: AttentionMassArgs): void {
  const params = new Params()
    .u32(a.rows)
    .u32(a.heads)
    .u32(a.kvHeads)
    .u32(a.headDim)
    .u32(a.posBase)
    .u32(a.window ?? 0)
    .f32(1 / Math.sqrt(a.headDim))
    .u32(a.position)
    .u32(a.keys);
  const stats = ctx.scratch('attention mass stats', a.rows * a.heads * 2 * 4, rec);
  rec.dispatch(ctx.pipeline({ url: STATS_URL }), params, [a.q, a.cacheK, stats], ctx.grid(a.rows * a.heads, 1));
  rec.dispatch(ctx.pipeline({ url: MASS_URL }), params, [a.q, a.cacheK, stats, a.out], ctx.grid(a.keys, 256));
}
