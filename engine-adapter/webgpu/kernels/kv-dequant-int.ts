import type { QuantizedSections } from '../../../storage/kv-object/index.ts';
import { Params, type GpuContext, type Recorder, type Binding } from '../gpu-context.ts';
import { inJobRuns, withJobs, type ExpandJob } from './expand-jobs.ts';

const URL_ = new URL('./kv-dequant-int.wgsl', import.meta.url);

export interface KvDequantIntArgs {
  bits: 8 | 4;
  /** Holds the layer blocks as uploaded. */
  src: GPUBuffer;
  sections: QuantizedSections;
  keys: Binding;
  values: Binding;
  tokens: number;
  /** kvHeads * headDim. */
  channels: number;
  groupSize: number;
  /** The blocks, all of `tokens` tokens. */
  jobs: readonly ExpandJob[];
}

/** Dequantizes uploaded int8/int4 layer blocks of one layer into its f32 key and value caches. */
export function recordKvDequantInt(ctx: GpuContext, rec: Recorder, a: KvDequantIntArgs): void {
  const s = a.sections;
  const n = a.tokens * a.channels;
  const header = (): Params =>
    new Params()
      .u32(n)
      .u32(a.channels)
      .u32(a.groupSize)
      .u32(Math.ceil(a.channels / a.groupSize))
      .u32(s.keyScale)
      .u32(s.keyMin)
      .u32(s.keyCodes)
      .u32(s.valueScale)
      .u32(s.valueMin)
      .u32(s.valueCodes);
  const pipeline = ctx.pipeline({ url: URL_, constants: { BITS: a.bits } });
  inJobRuns(a.jobs, (run) => {
    rec.dispatch(
      pipeline,
      withJobs(header(), run, (j) => [j.srcOffset, j.dstOffset, 0, 0]),
      [a.src, a.keys, a.values],
      [...ctx.grid(n, 256), run.length],
    );
  });
}
