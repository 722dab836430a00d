/**
 * Where a forward chunk's time goes on the WebGPU backend, kernel by kernel: for each case (a --question-token
 * question at position --context, and a --chunk-token prefill chunk from position 0),
 *   wall: the chunk as the engine runs it (one submission), split into recording, encoding (submit's synchronous
 *     part) and waiting for the GPU; median of --reps;
 *   kernels: the same chunk through a timed Recorder (every dispatch in a pass of its own between GPU timestamps),
 *     summed per kernel (file name and defines), largest first; gapMs is wall minus the kernels' sum: launches,
 *     barriers, encoding and the wait for completion.
 * Prints one JSON object. Run on a host with an NVIDIA GPU (docs/GPU.md):
 *   node --import tsx tools/gpu/profile-forward.ts --shape llama3.1-8b --context 8192 --chunk 4096
 */
import { parseArgs } from 'node:util';
import { syntheticWeights } from '../../bench/lib/synthetic-engine.ts';
import { randomTokenIds } from '../../bench/lib/token-ids.ts';
import { openDevice } from '../../engine-adapter/webgpu/device.ts';
import { ForwardScratch } from '../../engine-adapter/webgpu/forward-scratch.ts';
import { GpuContext, type DispatchTime } from '../../engine-adapter/webgpu/gpu-context.ts';
import { GpuKVCache } from '../../engine-adapter/webgpu/gpu-kv-cache.ts';
import { uploadWeights } from '../../engine-adapter/webgpu/gpu-weights.ts';
import { KvBufferPool } from '../../engine-adapter/webgpu/kv-buffer-pool.ts';
import { recordForwardChunk } from '../../engine-adapter/webgpu/record-forward.ts';
import { kernelTotals, shapeConfig } from './profile-support.ts';

const { values } = parseArgs({
  options: {
    shape: { type: 'string', default: 'llama3.2-1b' },
    context: { type: 'string', default: '8192' },
    question: { type: 'string', default: '64' },
    chunk: { type: 'string', default: '4096' },
    reps: { type: 'string', default: '5' },
  },
});
const c = shapeConfig(values.shape);
const context = Number(values.context);
const question = Number(values.question);
const chunk = Number(values.chunk);
const reps = Number(values.reps);

const t0 = performance.now();
const ctx = new GpuContext(await openDevice());
const w = await uploadWeights(ctx, syntheticWeights(c), ctx.features.shaderF16 ? 'f16' : 'f32');
const setupSeconds = (performance.now() - t0) / 1000;
const scratch = new ForwardScratch(ctx, c);
scratch.ensure(Math.max(question, chunk), 1);
const capacity = Math.max(context + question, chunk);
// Attention reads only rows below its position, so the cache's contents (zeros) do not change the work.
const cache = new GpuKVCache(ctx, capacity, c.layers, c.kvHeads * c.headDim, {
  pool: new KvBufferPool(ctx),
  whenSubmitted: (release) => release(),
});
const grow = ctx.recorder();
cache.reserve(capacity, () => grow);
await grow.submit();

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const round = (ms: number): number => Math.round(ms * 1000) / 1000;

/** Records the chunk of `tokens` at `position` with 'last' logits into a fresh recorder. */
function record(tokens: number, position: number, timed: boolean) {
  const rec = ctx.recorder({ timed });
  ctx.device.queue.writeBuffer(scratch.ids, 0, Uint32Array.from(randomTokenIds(tokens, c.vocabSize, 7)));
  recordForwardChunk(rec, { ctx, config: c, w, s: scratch, cache }, { tokens, position, logits: 'last' });
  return rec;
}

async function profile(tokens: number, position: number) {
  const split = { recordMs: [] as number[], encodeMs: [] as number[], gpuWaitMs: [] as number[], wallMs: [] as number[] };
  for (let i = 0; i <= reps; i++) {
    const a = performance.now();
    const rec = record(tokens, position, false);
    const b = performance.now();
    const done = rec.submit();
    const e = performance.now();
    await done;
    const d = performance.now();
    // The first run compiles pipelines.
    if (i === 0) continue;
    split.recordMs.push(b - a);
    split.encodeMs.push(e - b);
    split.gpuWaitMs.push(d - e);
    split.wallMs.push(d - a);
  }
  const timed = record(tokens, position, true);
  await timed.submit();
  const times: DispatchTime[] = timed.dispatchTimes();
  const { kernelMs, kernels } = kernelTotals(times);
  const wallMs = median(split.wallMs);
  return {
    tokens,
    position,
    dispatches: times.length,
    wallMs: round(wallMs),
    recordMs: round(median(split.recordMs)),
    encodeMs: round(median(split.encodeMs)),
    gpuWaitMs: round(median(split.gpuWaitMs)),
    wallRunsMs: split.wallMs.map(round),
    kernelMs: round(kernelMs),
    gapMs: round(wallMs - kernelMs),
    tokensPerSecond: Math.round((tokens / wallMs) * 1000),
    kernels,
  };
}

const cases = [await profile(question, context), await profile(chunk, 0)];
console.log(JSON.stringify({ device: ctx.description, shape: values.shape, setupSeconds, reps, cases }, null, 1));
cache.dispose();
w.destroy();
scratch.destroy();
await ctx.dispose();
