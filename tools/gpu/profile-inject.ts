/**
 * The host side of injecting a context on WebGPU (engine-adapter/webgpu/kv-injector.ts), without a model: --chunks
 * objects of --tokens tokens, each written layer after layer as a fetch delivers them, into one cache, then settled.
 * With --flush-per-layer, layer l of every object is written before layer l + 1, with a flush after each layer, as a
 * question running under its context's arrival has them (it flushes for every layer it waits on).
 * With --from-file, every object's blocks lie in a file (in /dev/shm where there is one) and are read from it into
 * staging on libuv's pool, as a same-host edge's blocks are (block-files.ts); --pool-mib sets the injector's staging
 * pool (kv-injector.ts StagingSizes).
 * Reports per pass what Engine.work's KV write counters report for a query (engine-work.ts): the host's
 * milliseconds staging, recording and submitting, and waiting for staging buffers, the batches submitted and the
 * expansion dispatches they recorded, this thread's garbage collection pauses and full collections, and the pass's
 * wall time (which on a software adapter is mostly its compute). Prints one JSON report.
 *   node --import tsx tools/gpu/profile-inject.ts --shape 32,8,128 --chunks 8 --tokens 256 --codec int4 --passes 5
 */
import { existsSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { ropeInvFreq } from '../../engine-adapter/cpu/kernels/rope.ts';
import { openDevice } from '../../engine-adapter/webgpu/device.ts';
import { GpuContext } from '../../engine-adapter/webgpu/gpu-context.ts';
import { GpuKVCache } from '../../engine-adapter/webgpu/gpu-kv-cache.ts';
import { GpuTransformTables } from '../../engine-adapter/webgpu/gpu-transform-tables.ts';
import { KvBufferPool } from '../../engine-adapter/webgpu/kv-buffer-pool.ts';
import { KvInjector } from '../../engine-adapter/webgpu/kv-injector.ts';
import { kvWritesBetween, threadGc } from '../../engine-adapter/engine-work.ts';
import { BlockFiles } from '../../engine-adapter/webgpu/block-files.ts';
import { layerExpander, type LayerWrite } from '../../engine-adapter/webgpu/kv-layer-expander.ts';
import { kvTensors, tokenIds } from '../../fixtures/kv-data.ts';
import { codecFor, codecFromString, encodeKVObject, fileIdentity, readKVHeader } from '../../storage/kv-object/index.ts';
import type { KVBlockSource } from '../../storage/kv-object/types.ts';

const { values } = parseArgs({
  options: {
    shape: { type: 'string', default: '32,8,128' },
    chunks: { type: 'string', default: '8' },
    tokens: { type: 'string', default: '256' },
    codec: { type: 'string', default: 'int4' },
    passes: { type: 'string', default: '5' },
    'flush-per-layer': { type: 'boolean', default: false },
    'from-file': { type: 'boolean', default: false },
    'pool-mib': { type: 'string' },
  },
});
const mib = (v: string | undefined): number | undefined => (v === undefined ? undefined : Number(v) * 1024 * 1024);
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
const fromFile = values['from-file'];
const injector = new KvInjector<LayerWrite>(ctx, layerExpander({ ctx, tables: new GpuTransformTables(ctx) }, freq, shape), {
  pool: mib(values['pool-mib']),
  files: fromFile ? new BlockFiles() : undefined,
});
threadGc();
const pool = new KvBufferPool(ctx);
// Stored before RoPE, as position-independent objects are: every block is rotated at its position too.
const spec = codecFromString(values.codec);
const kv = { ...kvTensors({ ...shape, tokens }, 3), ropeApplied: false };
const header = readKVHeader(encodeKVObject(kv, { modelFingerprint: 'profile', tokenIds: tokenIds(tokens), codec: spec }));
const codec = codecFor(spec);
const blocks = kv.perLayer.map((t) => codec.encode(t, { tokens, kvHeads, headDim }));
const dir = fromFile ? mkdtempSync(join(existsSync('/dev/shm') ? '/dev/shm' : tmpdir(), 'kdn-profile-inject-')) : null;
const sources = dir === null ? null : Array.from({ length: chunks }, (_, c) => objectFile(join(dir, `chunk-${c}`)));

/** The blocks laid end to end in a file of their own, as an edge's copy of one object holds them. */
function objectFile(path: string): KVBlockSource[] {
  writeFileSync(path, Buffer.concat(blocks));
  const identity = fileIdentity(statSync(path));
  let position = 0;
  return blocks.map((b) => {
    const source = { path, identity, position, length: b.length };
    position += b.length;
    return source;
  });
}

const report = [];
for (let pass = 0; pass < passes; pass++) {
  const cache = new GpuKVCache(ctx, chunks * tokens, layers, kvHeads * headDim, {
    pool,
    whenSubmitted: (release: () => void) => injector.whenSubmitted(release),
  });
  cache.reserve(chunks * tokens, () => injector.recorder());
  await injector.settle();
  const before = injector.work();
  const gcBefore = threadGc();
  const t0 = performance.now();
  const write = (c: number, layer: number) =>
    injector.write(blocks[layer]!, { cache, layer, header, position: c * tokens }, sources?.[c]?.[layer]);
  if (flushPerLayer) {
    for (let layer = 0; layer < layers; layer++) {
      for (let c = 0; c < chunks; c++) await write(c, layer);
      injector.flush();
    }
  } else {
    for (let c = 0; c < chunks; c++) for (let layer = 0; layer < layers; layer++) await write(c, layer);
  }
  await injector.settle();
  await ctx.device.queue.onSubmittedWorkDone();
  const wallMs = performance.now() - t0;
  // perf_hooks reports collections a little after them.
  await new Promise((resolve) => setTimeout(resolve, 20));
  const w = kvWritesBetween(before, injector.work());
  const gc = threadGc();
  const ms = (seconds: number): number => Math.round(seconds * 1e6) / 1e3;
  report.push({
    pass,
    blocks: w.blocks,
    stageMs: ms(w.stageSeconds),
    submitMs: ms(w.submitSeconds),
    waitMs: ms(w.waitSeconds),
    submits: w.submits,
    dispatches: w.dispatches,
    gcMs: ms(gc.gcSeconds - gcBefore.gcSeconds),
    fullGcs: gc.majorGcs - gcBefore.majorGcs,
    wallMs: Math.round(wallMs * 10) / 10,
  });
  cache.dispose();
}
await injector.destroy();
pool.destroy();
if (dir !== null) rmSync(dir, { recursive: true, force: true });
const staging = { fromFile, poolMib: values['pool-mib'] ?? 'default' };
console.log(
  JSON.stringify({ adapter: ctx.description, shape, chunks, tokens, codec: values.codec, flushPerLayer, staging, passes: report }, null, 1),
);
await ctx.dispose();
