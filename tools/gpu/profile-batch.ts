/**
 * Where a batched decode step's time goes on the WebGPU backend (engine-adapter/webgpu/batch-forward.ts): for each
 * --sequences count, that many sequences of one token each, every one at position --context of its own cache, as
 * continuous batching runs them (engine-adapter/decode-batcher.ts):
 *   wall: the step as the engine runs it, split into recording and submitting (the host) and waiting for the GPU;
 *     median of --reps, with the host's share per sequence; `stable` runs the same sequences in the same order
 *     every step, `rotating` moves each to the next place in the batch every step (as sequences joining and
 *     leaving move the others), so what the host caches per place in a step (bind groups) is missed;
 *   kernels: the same step through a timed Recorder, summed per kernel, largest first, with its dispatch count;
 *     gapMs is wall minus the kernels' sum: launches, copies, barriers and the wait for completion.
 * The model is a directory (--model, default the shipped model) or a synthetic shape (--shape). Prints one JSON object:
 *   node --import tsx tools/gpu/profile-batch.ts --sequences 1,8,32 --context 600
 */
import { parseArgs } from 'node:util';
import { syntheticWeights } from '../../bench/lib/synthetic-engine.ts';
import { DEFAULT_MODEL_DIR } from '../../kdn/default-model.ts';
import { loadModelWeights } from '../../engine-adapter/model/load-weights.ts';
import type { ModelWeights } from '../../engine-adapter/model/weights.ts';
import { gpuBatchForward, type GpuBatchSequence } from '../../engine-adapter/webgpu/batch-forward.ts';
import { openDevice } from '../../engine-adapter/webgpu/device.ts';
import { ForwardScratch } from '../../engine-adapter/webgpu/forward-scratch.ts';
import { GpuContext } from '../../engine-adapter/webgpu/gpu-context.ts';
import { GpuKVCache } from '../../engine-adapter/webgpu/gpu-kv-cache.ts';
import { uploadWeights } from '../../engine-adapter/webgpu/gpu-weights.ts';
import { KvBufferPool } from '../../engine-adapter/webgpu/kv-buffer-pool.ts';
import type { ModelParts } from '../../engine-adapter/webgpu/record-forward.ts';
import { kernelTotals, shapeConfig } from './profile-support.ts';

const { values } = parseArgs({
  options: {
    model: { type: 'string' },
    shape: { type: 'string' },
    sequences: { type: 'string', default: '1,8,32' },
    context: { type: 'string', default: '600' },
    reps: { type: 'string', default: '10' },
  },
});
const counts = values.sequences.split(',').map(Number);
const context = Number(values.context);
const reps = Number(values.reps);

const weights: ModelWeights = values.shape
  ? syntheticWeights(shapeConfig(values.shape))
  : (await loadModelWeights(values.model ?? DEFAULT_MODEL_DIR)).weights;
const c = weights.config;
const ctx = new GpuContext(await openDevice());
const w = await uploadWeights(ctx, weights, ctx.features.shaderF16 ? 'f16' : 'f32');
const s = new ForwardScratch(ctx, c);
const parts: ModelParts = { ctx, config: c, w, s };
const pool = new KvBufferPool(ctx);

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const round = (ms: number): number => Math.round(ms * 1000) / 1000;

/** `n` caches grown to hold the context and every rep's token (their contents, zeros, do not change the work). */
async function openCaches(n: number): Promise<GpuKVCache[]> {
  const capacity = context + 2 * reps + 4;
  const caches = Array.from(
    { length: n },
    () => new GpuKVCache(ctx, capacity, c.layers, c.kvHeads * c.headDim, { pool, whenSubmitted: (release) => release() }),
  );
  const grow = ctx.recorder();
  for (const cache of caches) cache.reserve(capacity, () => grow);
  await grow.submit();
  return caches;
}

/** Step `i`'s sequences: the caches in order, or rotated by `i` places. */
const step = (caches: GpuKVCache[], i: number, rotating = false): GpuBatchSequence[] =>
  caches.map((_, j) => ({
    cache: caches[rotating ? (i + j) % caches.length : j]!,
    tokens: Uint32Array.of((7 + i + j) % c.vocabSize),
    position: context + i,
  }));

/** Median wall, host and GPU-wait times of --reps steps, after one step that compiles pipelines. */
async function timeSteps(caches: GpuKVCache[], rotating: boolean, first: number) {
  const split = { hostMs: [] as number[], gpuWaitMs: [] as number[], wallMs: [] as number[] };
  for (let i = 0; i <= reps; i++) {
    const a = performance.now();
    const done = gpuBatchForward(parts, step(caches, first + i, rotating));
    const b = performance.now();
    await done;
    const d = performance.now();
    // The first step compiles pipelines and makes bind groups.
    if (i === 0) continue;
    split.hostMs.push(b - a);
    split.gpuWaitMs.push(d - b);
    split.wallMs.push(d - a);
  }
  const [wallMs, hostMs] = [median(split.wallMs), median(split.hostMs)];
  return {
    wallMs: round(wallMs),
    hostMs: round(hostMs),
    gpuWaitMs: round(median(split.gpuWaitMs)),
    hostMsPerSequence: round(hostMs / caches.length),
    wallRunsMs: split.wallMs.map(round),
  };
}

async function profile(n: number) {
  const caches = await openCaches(n);
  const stable = await timeSteps(caches, false, 0);
  const rotating = await timeSteps(caches, true, reps + 1);
  const rec = ctx.recorder({ timed: ctx.features.timestampQuery });
  await gpuBatchForward(parts, step(caches, 2 * reps + 2), rec);
  const commands = rec.counts();
  const { kernelMs, kernels } = kernelTotals(ctx.features.timestampQuery ? rec.dispatchTimes() : []);
  for (const cache of caches) cache.dispose();
  return {
    sequences: n,
    ...commands,
    stable,
    rotating,
    kernelMs: round(kernelMs),
    gapMs: round(stable.wallMs - kernelMs),
    kernels,
  };
}

const cases = [];
for (const n of counts) cases.push(await profile(n));
const model = values.shape ? `synthetic ${values.shape}` : (values.model ?? DEFAULT_MODEL_DIR);
console.log(JSON.stringify({ device: ctx.description, model, context, reps, cases }, null, 1));
w.destroy();
s.destroy();
await ctx.dispose();
