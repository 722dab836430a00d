import { KdnError } from '../../../common/errors.ts';
import { Params, type GpuContext, type Recorder, type Binding } from '../gpu-context.ts';
import type { GpuTransformLevel } from '../gpu-transform-table.ts';
import { inJobRuns, withJobs, type ExpandJob } from './expand-jobs.ts';

const URL_ = new URL('./kv-expand-transform.wgsl', import.meta.url);
/** Threads per workgroup and the most tokens a workgroup's tile spans (kv-expand-transform.wgsl holds the same). */
const WG = 256;
const MAX_TOKEN_GROUPS = 16;
/**
 * Tokens per thread: each basis row loaded into workgroup memory is used TILE_T times, each code 4 times per
 * thread; 8 keeps the accumulators in registers.
 */
const TOKENS_PER_THREAD = 8;

export interface KvExpandTransformArgs {
  /** Holds the layer blocks as uploaded. */
  src: GPUBuffer;
  keys: Binding;
  values: Binding;
  /** The table's level every block was encoded at. */
  level: GpuTransformLevel;
  layer: number;
  tokens: number;
  kvHeads: number;
  headDim: number;
  /** The blocks, all of `tokens` tokens. */
  jobs: readonly ExpandJob[];
}

/** Tokens one workgroup expands for `headDim` (each thread holds 4 channels of TOKENS_PER_THREAD tokens). */
export function transformTileTokens(headDim: number): number {
  if (headDim % 4 !== 0 || headDim < 4 || headDim > 4 * WG) {
    const need = `a head size that is a multiple of 4 up to ${4 * WG}`;
    throw new KdnError('KV_UNSUPPORTED', `the transform codec's GPU expansion needs ${need}, got ${headDim}`, {
      hint: 'use the int8 or int4 codec for this model',
    });
  }
  return Math.min(Math.floor(WG / (headDim / 4)), MAX_TOKEN_GROUPS) * TOKENS_PER_THREAD;
}

/** Expands uploaded transform-codec layer blocks of one layer into its f32 key and value caches. */
export function recordKvExpandTransform(ctx: GpuContext, rec: Recorder, a: KvExpandTransformArgs): void {
  const tile = transformTileTokens(a.headDim);
  const pipeline = ctx.pipeline({ url: URL_, constants: { HEAD_DIM: a.headDim } });
  const l = a.level;
  inJobRuns(a.jobs, (run) => {
    const params = withJobs(new Params().u32(a.tokens).u32(a.kvHeads).u32(a.layer).u32(0), run, (j) => [j.srcOffset, j.dstOffset, 0, 0]);
    const buffers = [a.src, a.keys, a.values, l.basis, l.mean, l.heads, l.comps];
    rec.dispatch(pipeline, params, buffers, [Math.ceil(a.tokens / tile), 2 * a.kvHeads, run.length]);
  });
}
