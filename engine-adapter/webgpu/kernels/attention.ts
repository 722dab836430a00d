import { KdnError } from '../../../common/errors.ts';
import type { Binding, GpuContext, Recorder } from '../gpu-context.ts';
import { attentionParams, keyEnd, slotBindings } from './attention-params.ts';
import { recordAttentionSubgroupMatrix, subgroupMatrixAttentionFits } from './attention-subgroup-matrix.ts';
import { chooseSplits, splitParts } from './attention-splits.ts';

export const ATTENTION_URL = new URL('./attention.wgsl', import.meta.url);
/** Query rows (token, q head) a workgroup serves. */
export const ROWS_PER_WORKGROUP = 16;
export const MAX_HEAD_DIM = 256;

export interface AttentionArgs {
  /** [tokens][heads][headDim], not yet scaled. */
  q: Binding;
  /** One layer's caches, [capacity][kvHeads][headDim], holding keys (after RoPE) of positions [0, posBase + tokens). */
  cacheK: Binding;
  cacheV: Binding;
  /** [tokens][heads][headDim] */
  out: Binding;
  tokens: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  /** Absolute position of query 0. */
  posBase: number;
  /**
   * Query rows gathered from anywhere in the sequence: row t sits at slots.buffer[t] (u32, ascending), the last at
   * slots.last; posBase is then unused.
   */
  slots?: { buffer: GPUBuffer; last: number };
  /** Sliding window in tokens, or null for full causal attention. */
  window: number | null;
  /** Parts the key range is split into (flash-decoding); default: chosen from the grid size. Given, it also keeps
   * recordAttention on the portable kernel (tests force each path). */
  splits?: number;
}

/** Workgroups (of 64 threads) that keep a large GPU busy; below this the key range is split to make more. */
const TARGET_WORKGROUPS = 512;

/** Keys per tile: K and V tiles together take 16 KiB of workgroup memory. */
export function keysPerTile(headDim: number): number {
  return Math.max(1, Math.min(32, Math.floor(2048 / headDim)));
}

/** attention.wgsl's override constants for `headDim` and `rows` query rows per workgroup (a power of two <= 16). */
export function attentionConstants(headDim: number, rows = ROWS_PER_WORKGROUP): Record<string, number> {
  const bk = keysPerTile(headDim);
  return { BK: bk, TILE: bk * headDim, DOTS: 64 * bk, ROWS: rows };
}

/** Prefill on the tensor cores where the adapter has them (and no split is forced); else the portable kernel. */
export function recordAttention(ctx: GpuContext, rec: Recorder, a: AttentionArgs): void {
  if (a.splits === undefined && subgroupMatrixAttentionFits(ctx, a)) recordAttentionSubgroupMatrix(ctx, rec, a);
  else recordAttentionPortable(ctx, rec, a);
}

/** The portable flash-attention kernel (with flash-decoding splits for few rows over long KV). */
export function recordAttentionPortable(ctx: GpuContext, rec: Recorder, a: AttentionArgs): void {
  if (a.headDim > MAX_HEAD_DIM || a.heads % a.kvHeads !== 0) {
    throw new KdnError(
      'MODEL_UNSUPPORTED',
      `Attention with headDim ${a.headDim}, ${a.heads} heads over ${a.kvHeads} KV heads is not supported.`,
      {
        hint: `headDim must be at most ${MAX_HEAD_DIM} and heads a multiple of KV heads.`,
      },
    );
  }
  const bk = keysPerTile(a.headDim);
  const constants = attentionConstants(a.headDim);
  const slots = slotBindings(a);
  const params = attentionParams(a);
  const rows = a.tokens * (a.heads / a.kvHeads);
  const groups = Math.ceil(rows / ROWS_PER_WORKGROUP) * a.kvHeads;
  const splits = a.splits ?? chooseSplits(groups, keyEnd(a), bk, TARGET_WORKGROUPS);
  params.u32(splits);
  const grid = [Math.ceil(rows / ROWS_PER_WORKGROUP), a.kvHeads, splits];
  if (splits === 1) {
    rec.dispatch(
      ctx.pipeline({ url: ATTENTION_URL, defines: slots.defines, constants }),
      params,
      [a.q, a.cacheK, a.cacheV, a.out, ...slots.buffers],
      grid,
    );
    return;
  }
  const part = splitParts(ctx, rec, splits, a.tokens * a.heads, a.headDim);
  const split = ctx.pipeline({ url: ATTENTION_URL, defines: ['SPLIT', ...slots.defines], constants });
  rec.dispatch(split, params, [a.q, a.cacheK, a.cacheV, part.acc, part.stats, ...slots.buffers], grid);
  part.combine(a.out);
}
