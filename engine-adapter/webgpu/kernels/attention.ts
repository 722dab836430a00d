import { KdnError } from '../../../common/errors.ts';
import { Params, type GpuContext, type Recorder } from '../gpu-context.ts';

const URL_ = new URL('./attention.wgsl', import.meta.url);
const ROWS_PER_WORKGROUP = 16;
const MAX_HEAD_DIM = 256;

export interface AttentionArgs {
  /** [tokens][heads][headDim], not yet scaled. */
  q: GPUBuffer;
  /** One layer's caches, [capacity][kvHeads][headDim], holding keys (after RoPE) of positions [0, posBase + tokens). */
  cacheK: GPUBuffer;
  cacheV: GPUBuffer;
  /** [tokens][heads][headDim] */
  out: GPUBuffer;
  tokens: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  /** Absolute position of query 0. */
  posBase: number;
  /** Sliding window in tokens, or null for full causal attention. */
  window: number | null;
}

/** Keys per tile: K and V tiles together take 16 KiB of workgroup memory. */
function keysPerTile(headDim: number): number {
  return Math.max(1, Math.min(32, Math.floor(2048 / headDim)));
}

export function recordAttention(ctx: GpuContext, rec: Recorder, a: AttentionArgs): void {
  if (a.headDim > MAX_HEAD_DIM || a.heads % a.kvHeads !== 0) {
    throw new KdnError('MODEL_UNSUPPORTED', `Attention with headDim ${a.headDim}, ${a.heads} heads over ${a.kvHeads} KV heads is not supported.`, {
      hint: `headDim must be at most ${MAX_HEAD_DIM} and heads a multiple of KV heads.`,
    });
  }
  const bk = keysPerTile(a.headDim);
  const pipeline = ctx.pipeline({ url: URL_, constants: { BK: bk, TILE: bk * a.headDim, DOTS: ROWS_PER_WORKGROUP * 4 * bk } });
  const params = new Params()
    .u32(a.tokens)
    .u32(a.heads)
    .u32(a.kvHeads)
    .u32(a.headDim)
    .u32(a.posBase)
    .u32(a.window ?? 0)
    .f32(1 / Math.sqrt(a.headDim));
  const rows = a.tokens * (a.heads / a.kvHeads);
  rec.dispatch(pipeline, params, [a.q, a.cacheK, a.cacheV, a.out], [Math.ceil(rows / ROWS_PER_WORKGROUP), a.kvHeads]);
}
