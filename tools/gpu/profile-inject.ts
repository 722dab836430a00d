/**
 * The host side of injecting a context on WebGPU (engine-adapter/webgpu/kv-injector.ts), without a model: --chunks
 * objects of --tokens tokens, each written layer after layer as a fetch delivers them, into one cache, then settled.
 * With --flush-per-layer, layer l of every object is written before layer l + 1, with a flush after each layer, as a
 * question running under its context's arrival has them (it flushes for every layer it waits on).
 * Reports per pass what Engine.work's KV write counters report for a query (engine-work.ts): the host's
 * milliseconds staging, recording and submitting, and waiting for staging buffers, the batches submitted and the
 * expansion dispatches they recorded, and the pass's wall time (which on a software adapter is mostly its compute).
 * Prints one JSON report.
 *   node --import tsx tools/gpu/profile-inject.ts --shape 32,8,128 --chunks 8 --tokens 256 --codec int4 --passes 5
 */
import { parseArgs } from 'node:util';
import { ropeInvFreq } from '../../engine-adapter/cpu/kernels/rope.ts';
import { openDevice } from '../../engine-adapter/webgpu/device.ts';
import { GpuContext } from '../../engine-adapter/webgpu/gpu-context.ts';
import { GpuKVCache } from '../../engine-adapter/webgpu/gpu-kv-cache.ts';
import { GpuTransformTables } from '../../engine-adapter/webgpu/gpu-transform-tables.ts';
import { KvBufferPool } from '../../engine-adapter/webgpu/kv-buffer-pool.ts';
import { KvInjector } from '../../engine-adapter/webgpu/kv-injector.ts';
import { kvWritesBetween } from '../../engine-adapter/engine-work.ts';
import { layerExpander, type LayerWrite } from '../../engine-adapter/webgpu/kv-layer-expander.ts';
import { kvTensors, tokenIds } from '../../fixtures/kv-data.ts';
import { codecFor, codecFromString, encodeKVObject, readKVHeader } from '../../storage/kv-object/index.ts';

const { values } = parseArgs({
  options: {
    shape: { type: 'string', default: '32,8,128' },
    chunks: { type: 'string', default: '8' },
    tokens: { type: 'string', default: '256' },
    codec: { type: 'string', default: 'int4' },
    passes: { type: 'string', default: '5' },
    'flush-per-layer': { type: 'boolean', default: false },
  },
});
const [layers, kvHeads, headDim] = values.shape.split(',').map(Number) as [number, number, number];
const chunks = Number(values.chunks);
const tokens = Number(values.tokens);
const passes = Number(values.passes);
const flushPerLayer = values['flush-per-layer'];
const shape = { layers, kvHeads, headDim };

const ctx = new GpuContext(await openDevice());
const invFreq = ropeInvFreq({ headDim, ropeTheta: 500_000, ropeScaling: null });
const freq = ctx.storage(invFreq.byteLength, 'inv freq');
ctx.device.queue.writeBuffer(freq, 0, invFreq);
const injector = new KvInjector<LayerWrite>(ctx, layerExpander({ ctx, tables: new GpuTransformTables(ctx) }, freq, shape));
const pool = new KvBufferPool(ctx);
// Stored before RoPE, as position-independent objects are: every block is rotated at its position too.
const spec = codecFromString(values.codec);
const kv = { ...kvTensors({ ...shape, tokens }, 3), ropeApplied: false };
const header = readKVHeader(encodeKVObject(kv, { modelFingerprint: 'profile', tokenIds: tokenIds(tokens), codec: spec }));
const codec = codecFor(spec);
const blocks = kv.perLayer.map((t) => codec.encode(t, { tokens, kvHeads, headDim }));

const report = [];
for (let pass = 0; pass < passes; pass++) {
  const cache = new GpuKVCache(ctx, chunks * tokens, layers, kvHeads * headDim, {
    pool,
    whenSubmitted: (release: () => void) => injector.whenSubmitted(release),
  });
  cache.reserve(chunks * tokens, () => injector.recorder());
  await injector.settle();
  const before = injector.work();
  const t0 = performance.now();
  if (flushPerLayer) {
    for (const [layer, bytes] of blocks.entries()) {
      for (let c = 0; c < chunks; c++) await injector.write(bytes, { cache, layer, header, position: c * tokens });
      injector.flush();
    }
  } else {
    for (let c = 0; c < chunks; c++) {
      for (const [layer, bytes] of blocks.entries()) await injector.write(bytes, { cache, layer, header, position: c * tokens });
    }
  }
  await injector.settle();
  await ctx.device.queue.onSubmittedWorkDone();
  const wallMs = performance.now() - t0;
  const w = kvWritesBetween(before, injector.work());
  const ms = (seconds: number): number => Math.round(seconds * 1e6) / 1e3;
  report.push({
    pass,
    blocks: w.blocks,
    stageMs: ms(w.stageSeconds),
    submitMs: ms(w.submitSeconds),
    waitMs: ms(w.waitSeconds),
    submits: w.submits,
    dispatches: w.dispatches,
    wallMs: Math.round(wallMs * 10) / 10,
  });
  cache.dispose();
}
await injector.destroy();
pool.destroy();
console.log(
  JSON.stringify({ adapter: ctx.description, shape, chunks, tokens, codec: values.codec, flushPerLayer, passes: report }, null, 1),
);
await ctx.dispose();
