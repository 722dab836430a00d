import { Params, type GpuContext, type Recorder, type Binding } from '../gpu-context.ts';
import { inJobRuns, withJobs, type ExpandJob } from './expand-jobs.ts';

const URL_ = new URL('./kv-dequant-fp16.wgsl', import.meta.url);

export interface KvDequantFp16Args {
  /** Holds the fp16 layer blocks as uploaded (keys then values, 2n halves each). */
  src: GPUBuffer;
  keys: Binding;
  values: Binding;
  /** Elements per tensor of every block: tokens * kvHeads * headDim. */
  n: number;
  jobs: readonly ExpandJob[];
}

/** Expands uploaded fp16 layer blocks of one layer into its f32 key and value caches. */
export function recordKvDequantFp16(ctx: GpuContext, rec: Recorder, a: KvDequantFp16Args): void {
  const pipeline = ctx.pipeline({ url: URL_ });
  inJobRuns(a.jobs, (run) => {
    const params = withJobs(new Params().u32(a.n), run, (j) => [j.srcOffset, j.dstOffset, 0, 0]);
    rec.dispatch(pipeline, params, [a.src, a.keys, a.values], [...ctx.grid(a.n, 256), run.length]);
  });
}
