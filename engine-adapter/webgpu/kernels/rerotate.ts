import { Params, type GpuContext, type Recorder, type Binding } from '../gpu-context.ts';
import { inJobRuns, withJobs } from './expand-jobs.ts';

const URL_ = new URL('./rerotate.wgsl', import.meta.url);

/** 'delta': rotate by `delta` positions (may be negative); 'positions': apply RoPE at positions start + t. */
export type RotateMode = { kind: 'delta'; delta: number } | { kind: 'positions' };

/** One run of keys to rotate: tokens [start, start + tokens). */
export interface RotateJob {
  start: number;
  mode: RotateMode;
}

export interface RerotateArgs {
  /** One layer's key cache, [capacity][kvHeads][headDim]. */
  cache: Binding;
  invFreq: GPUBuffer;
  /** Tokens of every job. */
  tokens: number;
  kvHeads: number;
  headDim: number;
  jobs: readonly RotateJob[];
}

/** Re-rotates (or first rotates) runs of keys in a layer's cache, in place. */
export function recordRerotate(ctx: GpuContext, rec: Recorder, a: RerotateArgs): void {
  const pipeline = ctx.pipeline({ url: URL_ });
  inJobRuns(a.jobs, (run) => {
    const params = withJobs(new Params().u32(a.tokens).u32(a.kvHeads).u32(a.headDim), run, (j) =>
      j.mode.kind === 'delta' ? [j.start, j.mode.delta, 0, 0] : [j.start, 0, 1, 0],
    );
    rec.dispatch(pipeline, params, [a.cache, a.invFreq], [...ctx.grid((a.tokens * a.kvHeads * a.headDim) / 2, 256), run.length]);
  });
}
