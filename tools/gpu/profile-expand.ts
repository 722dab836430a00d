/**
 * GPU expansion throughput of injected KV blocks: the transform codec (kernels/kv-expand-transform.ts) against int4
 * (kernels/kv-dequant-int.ts), in GB/s of fp16-equivalent KV written into the caches (2 bytes per key or value
 * element), so decoding can be checked against the rate at which blocks arrive. Each run expands --chunks blocks of
 * --tokens tokens of one layer per dispatch, --reps times; kernel times come from GPU timestamps where the adapter
 * has them, else from the wall clock around the whole queue (an upper bound). Prints one JSON report.
 * Run on a host with an NVIDIA GPU (docs/GPU.md): node --import tsx tools/gpu/profile-expand.ts --shape 8,128
 */
import { parseArgs } from 'node:util';
import { quantizedSections } from '../../storage/kv-object/index.ts';
import { serializeTransformTable, transformSections, type TransformTable } from '../../storage/kv-object/codecs/transform-table.ts';
import { openDevice } from '../../engine-adapter/webgpu/device.ts';
import { GpuContext, type Recorder } from '../../engine-adapter/webgpu/gpu-context.ts';
import { GpuTransformTable } from '../../engine-adapter/webgpu/gpu-transform-table.ts';
import { MAX_JOBS } from '../../engine-adapter/webgpu/kernels/expand-jobs.ts';
import { recordKvDequantInt } from '../../engine-adapter/webgpu/kernels/kv-dequant-int.ts';
import { recordKvExpandTransform } from '../../engine-adapter/webgpu/kernels/kv-expand-transform.ts';

const { values } = parseArgs({
  options: {
    shape: { type: 'string', default: '8,128' },
    tokens: { type: 'string', default: '256' },
    chunks: { type: 'string', default: String(MAX_JOBS) },
    reps: { type: 'string', default: '50' },
  },
});
const [kvHeads, headDim] = values.shape.split(',').map(Number) as [number, number];
const tokens = Number(values.tokens);
const chunks = Number(values.chunks);
const reps = Number(values.reps);
const fp16Bytes = chunks * tokens * 2 * kvHeads * headDim * 2;

/**
 * Bit allocations shaped like fitted ones: most bits on the leading components, none past the rank. `avg` is
 * bits per element, `rank` the components carrying bits, both named for 128-dim heads (other head sizes scale j).
 */
const ALLOCATIONS: Record<string, (j: number) => number> = {
  'rank64-1.75b': (j) => (j < 8 ? 8 : j < 32 ? 4 : j < 64 ? 2 : 0),
  'rank96-2.5b': (j) => (j < 16 ? 8 : j < 48 ? 4 : j < 96 ? 1 : 0),
  'rank128-4b': (j) => (j < 32 ? 6 : j < 64 ? 4 : j < 96 ? 3 : 3),
};

function table(bitsOf: (j: number) => number): TransformTable {
  const slots = 2 * kvHeads;
  const basis = new Float32Array(slots * headDim * headDim);
  for (let s = 0; s < slots; s++) for (let j = 0; j < headDim; j++) basis[(s * headDim + j) * headDim + j] = 1;
  const perSlot = slots * headDim;
  return serializeTransformTable({
    modelFingerprint: 'profile',
    layers: 1,
    kvHeads,
    headDim,
    mean: new Float32Array(perSlot),
    basis,
    levels: [
      {
        name: 'l0',
        targetBits: 4,
        bits: Uint8Array.from({ length: perSlot }, (_, i) => Math.min(bitsOf(Math.round(((i % headDim) * 128) / headDim)), 16)),
        step: new Float32Array(perSlot).fill(0.01),
        offset: new Float32Array(perSlot).fill(-0.5),
      },
    ],
  });
}

const ctx = new GpuContext(await openDevice());
const timed = ctx.features.timestampQuery;
const keys = ctx.storage(chunks * tokens * kvHeads * headDim * 4, 'keys');
const valuesBuf = ctx.storage(chunks * tokens * kvHeads * headDim * 4, 'values');
const dstJobs = (blockBytes: number): { srcOffset: number; dstOffset: number }[] =>
  Array.from({ length: chunks }, (_, i) => ({ srcOffset: i * Math.ceil(blockBytes / 16) * 16, dstOffset: i * tokens * kvHeads * headDim }));
const source = (blockBytes: number): GPUBuffer => {
  const words = new Uint32Array((chunks * Math.ceil(blockBytes / 16) * 16) / 4);
  for (let i = 0; i < words.length; i++) words[i] = Math.imul(i + 1, 2654435761) >>> 0;
  return ctx.upload(words, 'blocks');
};

async function measure(record: (rec: Recorder) => void): Promise<{ ms: number; gbps: number }> {
  const warm = ctx.recorder();
  record(warm);
  await warm.submit();
  const rec = ctx.recorder({ timed });
  const t0 = performance.now();
  for (let r = 0; r < reps; r++) record(rec);
  await rec.submit();
  const wall = performance.now() - t0;
  const ms = timed ? rec.dispatchTimes().reduce((sum, d) => sum + d.ms, 0) / reps : wall / reps;
  return { ms, gbps: fp16Bytes / (ms / 1000) / 1e9 };
}

const rows: Record<string, unknown>[] = [];
for (const [name, bitsOf] of Object.entries(ALLOCATIONS)) {
  const t = table(bitsOf);
  const gpu = new GpuTransformTable(ctx, t);
  const blockBytes = transformSections(t, 0, 0, tokens).total;
  const src = source(blockBytes);
  const jobs = dstJobs(blockBytes);
  const level = gpu.level(0);
  const args = { src, keys, values: valuesBuf, level, layer: 0, tokens, kvHeads, headDim, jobs };
  const m = await measure((rec) => recordKvExpandTransform(ctx, rec, args));
  rows.push({ codec: `transform ${name}`, blockBytes, ratioVsFp16: (tokens * 2 * kvHeads * headDim * 2) / blockBytes, ...m });
  gpu.destroy();
  src.destroy();
}
{
  const groupSize = 32;
  const sections = quantizedSections({ tokens, kvHeads, headDim }, 4, groupSize);
  const blockBytes = sections.total;
  const src = source(blockBytes);
  const jobs = dstJobs(blockBytes);
  const channels = kvHeads * headDim;
  const args = { bits: 4 as const, src, sections, keys, values: valuesBuf, tokens, channels, groupSize, jobs };
  const m = await measure((rec) => recordKvDequantInt(ctx, rec, args));
  rows.push({ codec: 'int4 g32', blockBytes, ratioVsFp16: (tokens * 2 * kvHeads * headDim * 2) / blockBytes, ...m });
}
const timing = timed ? 'gpu timestamps' : 'wall clock';
console.log(JSON.stringify({ device: ctx.description, timing, kvHeads, headDim, tokens, chunks, reps, rows }, null, 2));
await ctx.dispose();
