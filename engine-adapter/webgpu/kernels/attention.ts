import { KdnError } from '../../../common/errors.ts';
import type { GpuContext, Recorder } from '../gpu-context.ts';
import { attentionParams } from './attention-params.ts';
import { recordAttentionCombine } from './attention-combine.ts';
import { recordAttentionSubgroupMatrix, subgroupMatrixAttentionFits } from './attention-subgroup-matrix.ts';

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
  /** Parts the key range is split into (flash-decoding); default: chosen from the grid size. */
  splits?: number;
}

/** Workgroups that keep a large GPU busy; below this the key range is split to make more. */
const TARGET_WORKGROUPS = 512;
/** Each part covers at least this many key tiles, or the merge costs more than the split gains. */
const MIN_TILES_PER_SPLIT = 4;
const MAX_SPLITS = 64;

function chooseSplits(groups: number, keys: number, bk: number): number {
  const byGrid = Math.ceil(TARGET_WORKGROUPS / groups);
  const byKeys = Math.floor(keys / (bk * MIN_TILES_PER_SPLIT));
  return Math.max(1, Math.min(byGrid, byKeys, MAX_SPLITS));
}

/** The split path's part buffers, one pair per context, grown as needed and reused by every layer. */
const partBuffers = new WeakMap<GpuContext, { acc: GPUBuffer; stats: GPUBuffer; floats: number }>();

function parts(ctx: GpuContext, rec: Recorder, floats: number, rows: number): { acc: GPUBuffer; stats: GPUBuffer } {
  let held = partBuffers.get(ctx);
  if (held === undefined || held.floats < floats) {
    const old = held;
    // Sized for the acc floats; stats need 2 per row-part, which is at most that (headDim >= 2).
    held = { acc: ctx.storage(floats * 4, 'attention parts'), stats: ctx.storage(Math.max(floats, 2 * rows) * 4, 'attention part stats'), floats };
    partBuffers.set(ctx, held);
    if (old) rec.afterSubmit(() => (old.acc.destroy(), old.stats.destroy()));
  }
  return held;
}

/** Keys per tile: K and V tiles together take 16 KiB of workgroup memory. */
function keysPerTile(headDim: number): number {
  return Math.max(1, Math.min(32, Math.floor(2048 / headDim)));
}

/** Prefill on the tensor cores where the adapter has them (and no split is forced); else the portable kernel. */
export function recordAttention(ctx: GpuContext, rec: Recorder, a: AttentionArgs): void {
  if (a.splits === undefined && subgroupMatrixAttentionFits(ctx, a)) recordAttentionSubgroupMatrix(ctx, rec, a);
  else recordAttentionPortable(ctx, rec, a);
}

/** The portable flash-attention kernel (with flash-decoding splits for few rows over long KV). */
export function recordAttentionPortable(ctx: GpuContext, rec: Recorder, a: AttentionArgs): void {
  if (a.headDim > MAX_HEAD_DIM || a.heads % a.kvHeads !== 0) {
    throw new KdnError('MODEL_UNSUPPORTED', `Attention with headDim ${a.headDim}, ${a.heads} heads over ${a.kvHeads} KV heads is not supported.`, {
      hint: `headDim must be at most ${MAX_HEAD_DIM} and heads a multiple of KV heads.`,
    });
  }
  const bk = keysPerTile(a.headDim);
  const pipeline = ctx.pipeline({ url: URL_, constants: { BK: bk, TILE: bk * a.headDim, DOTS: ROWS_PER_WORKGROUP * 4 * bk } });
  const params = attentionParams(a);
  const rows = a.tokens * (a.heads / a.kvHeads);
  const groups = Math.ceil(rows / ROWS_PER_WORKGROUP) * a.kvHeads;
  const splits = a.splits ?? chooseSplits(groups, a.posBase + a.tokens, bk);
  params.u32(splits);
  const grid = [Math.ceil(rows / ROWS_PER_WORKGROUP), a.kvHeads, splits];
  if (splits === 1) {
    rec.dispatch(pipeline, params, [a.q, a.cacheK, a.cacheV, a.out], grid);
    return;
  }
  const outRows = a.tokens * a.heads;
  const part = parts(ctx, rec, splits * outRows * a.headDim, splits * outRows);
  const split = ctx.pipeline({ url: URL_, defines: ['SPLIT'], constants: { BK: bk, TILE: bk * a.headDim, DOTS: ROWS_PER_WORKGROUP * 4 * bk } });
  rec.dispatch(split, params, [a.q, a.cacheK, a.cacheV, part.acc, part.stats], grid);
  recordAttentionCombine(ctx, rec, { partAcc: part.acc, partStats: part.stats, out: a.out, rows: outRows, headDim: a.headDim, splits });
}
