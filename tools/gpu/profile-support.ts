/** What the GPU profiling tools share: the synthetic shape they run, and timing a recorded op. */
import { SYNTHETIC_SHAPES } from '../../bench/lib/shapes.ts';
import { parseModelConfig, type ModelConfig } from '../../engine-adapter/index.ts';
import type { DispatchTime, GpuContext, Recorder } from '../../engine-adapter/webgpu/gpu-context.ts';
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

/** A timed recording's dispatches summed per kernel, largest first, with each one's share of their total. */
export function kernelTotals(times: readonly DispatchTime[]): {
  kernelMs: number;
  kernels: { kernel: string; count: number; ms: number; share: number }[];
} {
  const perKernel = new Map<string, { count: number; ms: number }>();
  for (const t of times) {
    const k = perKernel.get(t.kernel) ?? { count: 0, ms: 0 };
    k.count++;
    k.ms += t.ms;
    perKernel.set(t.kernel, k);
  }
  const kernelMs = times.reduce((sum, t) => sum + t.ms, 0);
  const round = (ms: number): number => Math.round(ms * 1000) / 1000;
  const kernels = [...perKernel.entries()]
    .sort((a, b) => b[1].ms - a[1].ms)
    .map(([kernel, k]) => ({ kernel, count: k.count, ms: round(k.ms), share: round(k.ms / kernelMs) }));
  return { kernelMs, kernels };
}
