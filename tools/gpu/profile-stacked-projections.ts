/**
 * Whether stacking a layer's projections would pay: every layer's seven projection matmuls as the forward records
 * them (q, k, v, o, gate, up with SwiGLU, down; `separate`) against q|k|v and gate|up each as one matmul over their
 * weights stacked row-wise (`stacked`: four matmuls, so fewer dispatches and split-K reductions, and x read once per
 * stack). The stacked side writes gate|up's product whole instead of applying SwiGLU (its reduction would pair the
 * halves), so it slightly favours stacking. Weights are zeros (the tensor cores' time does not depend on values) and
 * every layer has its own, so the weights stream from memory as in a forward.
 *
 * For each --rows (64: a question's prefill, 1: a decode step), after --warm-seconds of both sides alternating (GPU
 * clocks settle), --rounds rounds in the order separate, stacked, stacked, separate, three submissions of all the
 * layers each: total ms (recording, encoding and the GPU) and submitted-to-done ms, medians with their range; then
 * one timed submission per side, its kernels summed (GPU time without launch gaps). Prints one JSON object. Run on a
 * host with an NVIDIA GPU (docs/GPU.md):
 *   node --import tsx tools/gpu/profile-stacked-projections.ts --shape llama3.1-8b --rows 64,1
 */
import { parseArgs } from 'node:util';
import { openDevice } from '../../engine-adapter/webgpu/device.ts';
import { GpuContext, type Recorder } from '../../engine-adapter/webgpu/gpu-context.ts';
import { BLOCK_ROWS, type GpuMatrix } from '../../engine-adapter/webgpu/gpu-matrix.ts';
import { recordMatmul } from '../../engine-adapter/webgpu/kernels/matmul.ts';
import { kernelTotals, shapeConfig } from './profile-support.ts';

const { values } = parseArgs({
  options: {
    shape: { type: 'string', default: 'llama3.1-8b' },
    rows: { type: 'string', default: '64,1' },
    rounds: { type: 'string', default: '10' },
    'warm-seconds': { type: 'string', default: '6' },
  },
});
const c = shapeConfig(values.shape);
const rowsList = values.rows.split(',').map(Number);
const maxRows = Math.max(...rowsList);
const rounds = Number(values.rounds);
const warmMs = Number(values['warm-seconds']) * 1000;

const ctx = new GpuContext(await openDevice());
const blocks = ctx.features.subgroupMatrix !== null;
/** A zero f16 weight matrix laid out as the forward's are on this adapter. */
const matrix = (rows: number, cols: number): GpuMatrix => ({
  buffer: ctx.storage((blocks ? Math.ceil(rows / BLOCK_ROWS) * BLOCK_ROWS : rows) * cols * 2, 'weights'),
  rows,
  cols,
  f16: true,
  rowWords: cols / 2,
  layout: blocks ? 'blocks' : 'rows',
});
const activations = (floats: number): GPUBuffer => ctx.storage(maxRows * floats * 4, 'activations');
const qDim = c.heads * c.headDim;
const kvDim = c.kvHeads * c.headDim;
const h = activations(c.hiddenSize);
const x = activations(c.hiddenSize);
const attn = activations(qDim);
const qkv = activations(qDim + 2 * kvDim);
const k = activations(kvDim);
const v = activations(kvDim);
const mlp = activations(2 * c.intermediateSize);
const layers = Array.from({ length: c.layers }, () => ({
  q: matrix(qDim, c.hiddenSize),
  k: matrix(kvDim, c.hiddenSize),
  v: matrix(kvDim, c.hiddenSize),
  o: matrix(c.hiddenSize, qDim),
  gate: matrix(c.intermediateSize, c.hiddenSize),
  up: matrix(c.intermediateSize, c.hiddenSize),
  down: matrix(c.hiddenSize, c.intermediateSize),
  qkv: matrix(qDim + 2 * kvDim, c.hiddenSize),
  gateUp: matrix(2 * c.intermediateSize, c.hiddenSize),
}));

type Side = 'separate' | 'stacked';
function record(side: Side, rec: Recorder, m: number): void {
  for (const w of layers) {
    if (side === 'separate') {
      recordMatmul(ctx, rec, { x: h, w: w.q, y: qkv, m });
      recordMatmul(ctx, rec, { x: h, w: w.k, y: k, m });
      recordMatmul(ctx, rec, { x: h, w: w.v, y: v, m });
    } else {
      recordMatmul(ctx, rec, { x: h, w: w.qkv, y: qkv, m });
    }
    recordMatmul(ctx, rec, { x: attn, w: w.o, y: x, m, into: 'add' });
    if (side === 'separate') {
      recordMatmul(ctx, rec, { x: h, w: w.gate, y: mlp, m });
      recordMatmul(ctx, rec, { x: h, w: w.up, y: mlp, m, into: 'swiglu' });
    } else {
      recordMatmul(ctx, rec, { x: h, w: w.gateUp, y: mlp, m });
    }
    recordMatmul(ctx, rec, { x: mlp, w: w.down, y: x, m, into: 'add' });
  }
}

/** One submission of every layer: ms from the first recorded dispatch, and from submitting, to the GPU being done. */
async function once(side: Side, m: number): Promise<{ total: number; gpu: number }> {
  const start = performance.now();
  const rec = ctx.recorder();
  record(side, rec, m);
  const submitted = performance.now();
  await rec.submit();
  const end = performance.now();
  return { total: end - start, gpu: end - submitted };
}

const round3 = (ms: number): number => Math.round(ms * 1000) / 1000;
function summary(xs: number[]): { median: number; min: number; max: number } {
  const sorted = [...xs].sort((a, b) => a - b);
  return { median: round3(sorted[Math.floor(sorted.length / 2)]!), min: round3(sorted[0]!), max: round3(sorted.at(-1)!) };
}

const results = [];
for (const m of rowsList) {
  const warmStart = performance.now();
  while (performance.now() - warmStart < warmMs) for (const side of ['separate', 'stacked'] as const) await once(side, m);
  const runs = { separate: { total: [] as number[], gpu: [] as number[] }, stacked: { total: [] as number[], gpu: [] as number[] } };
  for (let r = 0; r < rounds; r++) {
    for (const side of ['separate', 'stacked', 'stacked', 'separate'] as const) {
      for (let i = 0; i < 3; i++) {
        const t = await once(side, m);
        runs[side].total.push(t.total);
        runs[side].gpu.push(t.gpu);
      }
    }
  }
  const kernels: Record<string, unknown> = {};
  if (ctx.features.timestampQuery) {
    for (const side of ['separate', 'stacked'] as const) {
      const rec = ctx.recorder({ timed: true });
      record(side, rec, m);
      await rec.submit();
      kernels[side] = kernelTotals(rec.dispatchTimes());
    }
  }
  results.push({
    rows: m,
    totalMs: { separate: summary(runs.separate.total), stacked: summary(runs.stacked.total) },
    submittedToDoneMs: { separate: summary(runs.separate.gpu), stacked: summary(runs.stacked.gpu) },
    kernels,
  });
}
console.log(
  JSON.stringify({ device: ctx.description, shape: values.shape, layers: c.layers, rounds, warmSeconds: warmMs / 1000, results }, null, 1),
);
await ctx.dispose();
