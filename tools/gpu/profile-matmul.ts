/**
 * How fast the matmul the engine chooses runs each projection of one layer of a shape, for a few row counts (a
 * question's 64 tokens, a prefill chunk's 1024): ms and TFLOP/s per projection, each recorded --reps times into one
 * submission. Only the seven projection matrices are made, so it starts in seconds. Run on a host with an NVIDIA GPU (docs/GPU.md):
 *   node --import tsx tools/gpu/profile-matmul.ts --shape llama3.1-8b --rows 64,1024
 */
import { parseArgs } from 'node:util';
import { openDevice } from '../../engine-adapter/webgpu/device.ts';
import { GpuContext } from '../../engine-adapter/webgpu/gpu-context.ts';
import { uploadMatrixF16 } from '../../engine-adapter/webgpu/gpu-matrix.ts';
import { shapeConfig, timeMatmul } from './profile-support.ts';

const { values } = parseArgs({
  options: {
    shape: { type: 'string', default: 'llama3.1-8b' },
    rows: { type: 'string', default: '64,1024' },
    reps: { type: 'string', default: '10' },
  },
});
const c = shapeConfig(values.shape);
const reps = Number(values.reps);
const rowCounts = values.rows.split(',').map(Number);
const ctx = new GpuContext(await openDevice());
const kvDim = c.kvHeads * c.headDim;
const qDim = c.heads * c.headDim;
const shapes: Record<string, [number, number]> = {
  q: [qDim, c.hiddenSize],
  k: [kvDim, c.hiddenSize],
  v: [kvDim, c.hiddenSize],
  o: [c.hiddenSize, qDim],
  gate: [c.intermediateSize, c.hiddenSize],
  up: [c.intermediateSize, c.hiddenSize],
  down: [c.hiddenSize, c.intermediateSize],
};
// Values only set the magnitudes: a cheap deterministic pattern in [-0.05, 0.05).
const pattern = (n: number): Float32Array => Float32Array.from({ length: n }, (_, i) => (((i * 2654435761) >>> 0) / 2 ** 32 - 0.5) * 0.1);
const matrices = Object.fromEntries(
  await Promise.all(
    Object.entries(shapes).map(
      async ([name, [rows, cols]]) =>
        [name, await uploadMatrixF16(ctx, { shape: [rows, cols], data: pattern(rows * cols) }, name)] as const,
    ),
  ),
);
const maxRows = Math.max(...rowCounts);
const widest = Math.max(c.hiddenSize, c.intermediateSize, qDim);
const x = ctx.upload(pattern(maxRows * widest), 'x');
const y = ctx.storage(maxRows * widest * 4, 'y');

const byRows: Record<string, unknown> = {};
for (const m of rowCounts) {
  const each: Record<string, { ms: number; tflops: number }> = {};
  for (const [name, w] of Object.entries(matrices)) each[name] = await timeMatmul(ctx, reps, { x, w, y, m });
  const layerMs = Object.values(each).reduce((s, v) => s + v.ms, 0);
  byRows[m] = { perProjection: each, layerMs, allLayersMs: layerMs * c.layers };
}
console.log(JSON.stringify({ device: ctx.description, shape: values.shape, reps, rows: byRows }, null, 1));
await ctx.dispose();
