/**
 * What the fusions of a layer's projections gain: every layer's seven projection matmuls and the post-attention norm
 * as the forward records them, with each fusion undone in turn.
 * - `separate`: q, k, v and gate, up each run part by part (seven matmuls, each with its own split-K reduction), the
 *   norm a pass of its own;
 * - `stacked`: each stack as one split product (kernels/matmul-stacked.ts: four matmuls, the q|k|v reduction storing q,
 *   k and v to their own buffers and the gate|up one applying SwiGLU), the norm still its own pass;
 * - `fused`: stacked, and the output projection's reduction adding into the residual stream and norming it in the
 *   same pass (kernels/matmul-add-norm.ts): the forward's path where the products split.
 * Every side reads the same weights, one buffer per stack with each part a view, as the engine holds them. Weights
 * are zeros (the tensor cores' time does not depend on values) and every layer has its own, so the weights stream
 * from memory as in a forward.
 *
 * For each --rows (64: a question's prefill; 256: a blend's or a long question's rows, where the 128 x 128 kernel
 * still splits), after --warm-seconds of the sides alternating (GPU clocks settle), --rounds rounds in the order
 * separate, stacked, fused, fused, stacked, separate, three submissions of all the layers each: total ms (recording,
 * encoding and the GPU) and submitted-to-done ms, medians with their range; then one timed submission per side, its
 * kernels summed (GPU time without launch gaps). --k-parts forces every product's K split (the tiny shape's products
 * do not split on their own). Prints one JSON object. Run on a host with an NVIDIA GPU (docs/GPU.md):
 *   node --import tsx tools/gpu/profile-projection-fusions.ts --shape llama3.1-8b --rows 64,256
 */
import { parseArgs } from 'node:util';
import { openDevice } from '../../engine-adapter/webgpu/device.ts';
import { GpuContext, type Recorder } from '../../engine-adapter/webgpu/gpu-context.ts';
import { f16MatrixBytes, type GpuMatrix, type MatrixLayout } from '../../engine-adapter/webgpu/gpu-matrix.ts';
import { recordMatmul } from '../../engine-adapter/webgpu/kernels/matmul.ts';
import { recordMatmulAddNorm } from '../../engine-adapter/webgpu/kernels/matmul-add-norm.ts';
import { recordStackedMatmul } from '../../engine-adapter/webgpu/kernels/matmul-stacked.ts';
import { recordRmsNorm } from '../../engine-adapter/webgpu/kernels/rmsnorm.ts';
import { allocateStacked, type StackedMatrix } from '../../engine-adapter/webgpu/stacked-matrix.ts';
import { kernelTotals, shapeConfig } from './profile-support.ts';

const { values } = parseArgs({
  options: {
    shape: { type: 'string', default: 'llama3.1-8b' },
    rows: { type: 'string', default: '64,256' },
    rounds: { type: 'string', default: '10' },
    'warm-seconds': { type: 'string', default: '6' },
    'k-parts': { type: 'string' },
  },
});
const c = shapeConfig(values.shape);
const rowsList = values.rows.split(',').map(Number);
const maxRows = Math.max(...rowsList);
const rounds = Number(values.rounds);
const warmMs = Number(values['warm-seconds']) * 1000;
const kParts = values['k-parts'] === undefined ? undefined : Number(values['k-parts']);

const ctx = new GpuContext(await openDevice());
const layout: MatrixLayout = ctx.features.subgroupMatrix !== null ? 'blocks' : 'rows';
/** A zero f16 weight matrix laid out as the forward's are on this adapter. */
const matrix = (rows: number, cols: number): GpuMatrix => ({
  buffer: ctx.storage(f16MatrixBytes(rows, cols, layout), 'weights'),
  rows,
  cols,
  f16: true,
  rowWords: cols / 2,
  layout,
});
/** Zero matrices of the model's width stacked in one buffer, each part a view of its rows (stacked-matrix.ts). */
function stack(partRows: number[]): StackedMatrix {
  const stacked = allocateStacked(ctx, partRows, c.hiddenSize, 'stacked weights', layout);
  if (stacked === null) throw new Error(`parts of ${partRows.join(', ')} rows cannot be views of one buffer on this adapter`);
  return { whole: { w: stacked.whole }, parts: stacked.parts.map((w) => ({ w })) };
}
const activations = (floats: number): GPUBuffer => ctx.storage(maxRows * floats * 4, 'activations');
const qDim = c.heads * c.headDim;
const kvDim = c.kvHeads * c.headDim;
const h = activations(c.hiddenSize);
const x = activations(c.hiddenSize);
const attn = activations(qDim);
const q = activations(qDim);
const k = activations(kvDim);
const v = activations(kvDim);
const mlp = activations(c.intermediateSize);
const normWeight = ctx.storage(c.hiddenSize * 4, 'norm weight');
const layers = Array.from({ length: c.layers }, () => ({
  qkv: stack([qDim, kvDim, kvDim]),
  o: matrix(c.hiddenSize, qDim),
  gateUp: stack([c.intermediateSize, c.intermediateSize]),
  down: matrix(c.hiddenSize, c.intermediateSize),
}));

const SIDES = ['separate', 'stacked', 'fused'] as const;
type Side = (typeof SIDES)[number];
function record(side: Side, rec: Recorder, m: number): void {
  const as = (w: StackedMatrix): StackedMatrix => (side === 'separate' ? { whole: null, parts: w.parts } : w);
  const norm = { weight: normWeight, out: h, eps: 1e-5 };
  for (const w of layers) {
    recordStackedMatmul(ctx, rec, { x: h, w: as(w.qkv), m, kParts, out: { kind: 'columns', ys: [q, k, v] } });
    if (side === 'fused') recordMatmulAddNorm(ctx, rec, { x: attn, w: w.o, y: x, m, kParts, norm });
    else {
      recordMatmul(ctx, rec, { x: attn, w: w.o, y: x, m, kParts, into: 'add' });
      recordRmsNorm(ctx, rec, { x, weight: normWeight, out: h, rows: m, n: c.hiddenSize, eps: norm.eps });
    }
    recordStackedMatmul(ctx, rec, { x: h, w: as(w.gateUp), m, kParts, out: { kind: 'swiglu', y: mlp } });
    recordMatmul(ctx, rec, { x: mlp, w: w.down, y: x, m, kParts, into: 'add' });
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
  while (performance.now() - warmStart < warmMs) for (const side of SIDES) await once(side, m);
  const runs = Object.fromEntries(SIDES.map((side) => [side, { total: [] as number[], gpu: [] as number[] }])) as Record<
    Side,
    { total: number[]; gpu: number[] }
  >;
  for (let r = 0; r < rounds; r++) {
    for (const side of [...SIDES, ...[...SIDES].reverse()]) {
      for (let i = 0; i < 3; i++) {
        const t = await once(side, m);
        runs[side].total.push(t.total);
        runs[side].gpu.push(t.gpu);
      }
    }
  }
  const kernels: Record<string, unknown> = {};
  if (ctx.features.timestampQuery) {
    for (const side of SIDES) {
      const rec = ctx.recorder({ timed: true });
      record(side, rec, m);
      await rec.submit();
      kernels[side] = kernelTotals(rec.dispatchTimes());
    }
  }
  results.push({
    rows: m,
    totalMs: Object.fromEntries(SIDES.map((side) => [side, summary(runs[side].total)])),
    submittedToDoneMs: Object.fromEntries(SIDES.map((side) => [side, summary(runs[side].gpu)])),
    kernels,
  });
}
console.log(
  JSON.stringify(
    { device: ctx.description, shape: values.shape, layers: c.layers, rounds, warmSeconds: warmMs / 1000, kParts: kParts ?? null, results },
    null,
    1,
  ),
);
await ctx.dispose();
