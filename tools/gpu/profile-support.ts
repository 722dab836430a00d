/** What the GPU profiling tools share: the synthetic shape they run, and timing a recorded op. */
import { SYNTHETIC_SHAPES } from '../../bench/lib/shapes.ts';
import { parseModelConfig, type ModelConfig } from '../../engine-adapter/index.ts';
import type { GpuContext, Recorder } from '../../engine-adapter/webgpu/gpu-context.ts';
import { recordMatmul, type MatmulArgs } from '../../engine-adapter/webgpu/kernels/matmul.ts';

/** The model config of a synthetic benchmark shape (bench/lib/shapes.ts). */
export function shapeConfig(shape: string): ModelConfig {
  const hf = SYNTHETIC_SHAPES[shape];
  if (!hf) throw new Error(`unknown shape ${shape}; one of ${Object.keys(SYNTHETIC_SHAPES).join(', ')}`);
  return parseModelConfig(hf, shape);
}

/**
 * Mean ms of `op` recorded `reps` times into one submission, after one warm-up submission: the GPU time of its
 * dispatches (a timed Recorder's timestamps) where the adapter has timestamp queries. Elsewhere, the submission's
 * wall time divided by `reps`, which also counts the submission's fixed latency.
 */
export async function timeRecorded(ctx: GpuContext, reps: number, op: (rec: Recorder) => void): Promise<number> {
  const once = ctx.recorder();
  op(once);
  await once.submit();
  const timed = ctx.features.timestampQuery;
  const rec = ctx.recorder({ timed });
  for (let i = 0; i < reps; i++) op(rec);
  const t0 = performance.now();
  await rec.submit();
  const total = timed ? rec.dispatchTimes().reduce((sum, d) => sum + d.ms, 0) : performance.now() - t0;
  return total / reps;
}

/** timeRecorded for the matmul the engine chooses for `a`, and the TFLOP/s that makes. */
export async function timeMatmul(ctx: GpuContext, reps: number, a: MatmulArgs): Promise<{ ms: number; tflops: number }> {
  const ms = await timeRecorded(ctx, reps, (rec) => recordMatmul(ctx, rec, a));
  return { ms, tflops: (2 * a.m * a.w.rows * a.w.cols) / ms / 1e9 };
}
