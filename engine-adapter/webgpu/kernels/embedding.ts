import { Params, type GpuContext, type Recorder } from '../gpu-context.ts';
import type { GpuMatrix } from '../gpu-matrix.ts';

const URL_ = new URL('./embedding.wgsl', import.meta.url);

/** out[t][:] = table row ids[t]; ids must already be checked against the vocabulary. */
export function recordEmbedding(
  ctx: GpuContext,
  rec: Recorder,
  a: { ids: GPUBuffer; table: GpuMatrix; out: GPUBuffer; tokens: number },
): void {
  const { table } = a;
  const pipeline = ctx.pipeline({ url: URL_, defines: table.f16 ? ['F16_WEIGHTS'] : [] });
  const params = new Params().u32(a.tokens).u32(table.cols).u32(table.rowWords);
  rec.dispatch(pipeline, params, [a.ids, table.buffer, a.out], ctx.grid(a.tokens * table.cols, 256));
}
