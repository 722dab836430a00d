/**
 * Flash-decoding for both attention kernels: when few query rows face a long key range, the range is cut into
 * parts run by separate workgroups (each writing an unnormalised accumulator and its (max, sum)), and
 * attention-combine.wgsl merges them. Here: how many parts, and the part buffers.
 */
import type { Binding, GpuContext, Recorder } from '../gpu-context.ts';
import { recordAttentionCombine } from './attention-combine.ts';

/**
 * Each part covers at least this many key tiles. One: a workgroup walks its tiles one after another, so a decode row
 * over 600 keys in parts of at least 4 tiles took 0.19 ms per attention dispatch on an H200 (most of a batched
 * step's time, tools/gpu/profile-batch.ts) and 0.084 ms in parts of one; merging the extra parts costs a few
 * microseconds.
 */
const MIN_TILES_PER_SPLIT = 1;
const MAX_SPLITS = 64;

/** The most parts `keys` keys in tiles of `bk` are cut into. */
export function splitsByKeys(keys: number, bk: number): number {
  return Math.max(1, Math.min(Math.floor(keys / (bk * MIN_TILES_PER_SPLIT)), MAX_SPLITS));
}

/** Parts for `groups` workgroups over `keys` keys in tiles of `bk`, so the grid reaches about `target` workgroups. */
export function chooseSplits(groups: number, keys: number, bk: number, target: number): number {
  return Math.max(1, Math.min(Math.ceil(target / groups), splitsByKeys(keys, bk)));
}

export interface SplitParts {
  acc: GPUBuffer;
  stats: GPUBuffer;
  /** Records the merge of the parts into `out` ([rows][headDim]); call after the split dispatch. */
  combine(out: Binding): void;
}

/** Part buffers for `splits` parts of `rows` = tokens * heads output rows of `headDim`. */
export function splitParts(ctx: GpuContext, rec: Recorder, splits: number, rows: number, headDim: number): SplitParts {
  const floats = splits * rows * headDim;
  const acc = ctx.scratch('attention parts', floats * 4, rec);
  // Two floats (max, sum) per row and part.
  const stats = ctx.scratch('attention part stats', 2 * splits * rows * 4, rec);
  return { acc, stats, combine: (out) => recordAttentionCombine(ctx, rec, { partAcc: acc, partStats: stats, out, rows, headDim, splits }) };
}
