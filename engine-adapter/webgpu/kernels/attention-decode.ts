import type { GpuContext, Recorder } from '../gpu-context.ts';
import type { AttentionArgs } from './attention.ts';
import { attentionParams } from './attention-params.ts';
import { splitParts } from './attention-splits.ts';

const URL_ = new URL('./attention-decode.wgsl', import.meta.url);
/** The kernel's limits (attention-decode.wgsl): query heads per kv head, and head size. */
const MAX_GROUP = 8;
const MAX_HEAD_DIM = 256;
/** Keys per part: two of the kernel's 64-key passes, enough work to outweigh the part's merge. */
const KEYS_PER_PART = 128;
const MAX_PARTS = 64;

/** Whether the decode kernel takes `a`: one query token at its position (no gathered rows), a group and head it holds. */
export function decodeAttentionFits(a: AttentionArgs): boolean {
  const group = a.heads / a.kvHeads;
  return a.tokens === 1 && !a.slots && Number.isInteger(group) && group <= MAX_GROUP && a.headDim <= MAX_HEAD_DIM;
}

/**
 * One query token's attention over its cache (a decode step), its visible keys cut into parts that workgroups take
 * in parallel and attention-combine merges; `a.splits` forces the part count. The CPU reference is
 * cpu/kernels/attention.ts, as for every attention kernel.
 */
export function recordAttentionDecode(ctx: GpuContext, rec: Recorder, a: AttentionArgs): void {
  const window = a.window ?? 0;
  const visible = window > 0 ? Math.min(window, a.posBase + 1) : a.posBase + 1;
  const parts = a.splits ?? Math.min(MAX_PARTS, Math.ceil(visible / KEYS_PER_PART));
  const part = splitParts(ctx, rec, parts, a.heads, a.headDim);
  const params = attentionParams(a).u32(parts);
  rec.dispatch(ctx.pipeline({ url: URL_ }), params, [a.q, a.cacheK, a.cacheV, part.acc, part.stats], [parts, a.kvHeads]);
  part.combine(a.out);
}
