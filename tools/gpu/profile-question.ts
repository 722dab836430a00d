/**
 * Where the time of an injected query goes on the WebGPU backend, without HTTP: for each --contexts length,
 *   inject: chunk objects (--chunk tokens, each codec) held verified in host memory, written layer by layer into a
 *     fresh cache reserved for the context (what a query does once the bytes arrived), GB/s of stored bytes until
 *     the GPU has them, and the same writes again (grownMs: a second pass);
 *   question: the --question-token prefill at that position (median of --reps), as ttft's question_ms;
 *   kernels: one layer's kernels for the question's tokens (each recorded --reps times in one submission):
 *     matmuls, attention as chosen (tensor cores with key splits where they exist), and the alternatives.
 * Prints one JSON object. Run on a host with an NVIDIA GPU (docs/GPU.md):
 *   node --import tsx tools/gpu/profile-question.ts --shape llama3.1-8b --contexts 8192,32768
 */
import { parseArgs } from 'node:util';
import { syntheticWeights } from '../../bench/lib/synthetic-engine.ts';
import { shapeConfig, timeMatmul, timeRecorded } from './profile-support.ts';
import { randomTokenIds } from '../../bench/lib/token-ids.ts';
import type { KVCacheHandle } from '../../engine-adapter/index.ts';
import { openDevice } from '../../engine-adapter/webgpu/device.ts';
import { GpuContext } from '../../engine-adapter/webgpu/gpu-context.ts';
import type { GpuMatrix } from '../../engine-adapter/webgpu/gpu-matrix.ts';
import { uploadWeights } from '../../engine-adapter/webgpu/gpu-weights.ts';
import { recordStackedMatmul } from '../../engine-adapter/webgpu/kernels/matmul-stacked.ts';
import { recordAttention, recordAttentionPortable } from '../../engine-adapter/webgpu/kernels/attention.ts';
import {
  recordAttentionSubgroupMatrix,
  subgroupMatrixAttentionFits,
} from '../../engine-adapter/webgpu/kernels/attention-subgroup-matrix.ts';
import { createWebGPUBackend } from '../../engine-adapter/webgpu/webgpu-backend.ts';
import { codecFromString, encodeKVObject, readKVHeader } from '../../storage/kv-object/index.ts';
import { openLayerBlock } from '../../storage/kv-object/layer-block.ts';
import type { CodecName, KVHeader, KVLayerBlock, KVTensors } from '../../storage/kv-object/types.ts';

const { values } = parseArgs({
  options: {
    shape: { type: 'string', default: 'llama3.2-1b' },
    contexts: { type: 'string', default: '8192' },
    question: { type: 'string', default: '64' },
    chunk: { type: 'string', default: '256' },
    codecs: { type: 'string', default: 'fp16,int8,int4' },
    reps: { type: 'string', default: '3' },
  },
});
const shape = values.shape;
const c = shapeConfig(shape);
const contexts = values.contexts.split(',').map(Number);
const question = Number(values.question);
const chunk = Number(values.chunk);
const reps = Number(values.reps);
const codecs = values.codecs.split(',') as CodecName[];
const maxContext = Math.max(...contexts);
const kvDim = c.kvHeads * c.headDim;

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

/** One chunk's object per codec, verified once; its header's positionBase is moved per injected position. */
function chunkBlocks(codec: CodecName): { header: KVHeader; blocks: KVLayerBlock[]; bytes: number } {
  const perLayer = Array.from({ length: c.layers }, (_, l) => {
    const keys = new Float32Array(chunk * kvDim);
    const vals = new Float32Array(chunk * kvDim);
    for (let i = 0; i < keys.length; i++) {
      keys[i] = Math.sin(i * 0.37 + l);
      vals[i] = Math.cos(i * 0.11 + l);
    }
    return { keys, values: vals };
  });
  const kv: KVTensors = {
    layers: c.layers,
    kvHeads: c.kvHeads,
    headDim: c.headDim,
    tokens: chunk,
    positionBase: 0,
    ropeApplied: true,
    perLayer,
  };
  const bytes = encodeKVObject(kv, {
    modelFingerprint: 'profile',
    tokenIds: new Array<number>(chunk).fill(1),
    codec: codecFromString(codec),
  });
  const header = readKVHeader(bytes);
  const start = bytes.length - header.layerOffsets[c.layers]!;
  const blocks = Array.from({ length: c.layers }, (_, l) =>
    openLayerBlock(header, l, bytes.subarray(start + header.layerOffsets[l]!, start + header.layerOffsets[l + 1]!)),
  );
  return { header, blocks, bytes: bytes.length };
}

const t0 = performance.now();
const weights = syntheticWeights(c);
const backend = await createWebGPUBackend(weights, { capacity: maxContext + question });
const setupSeconds = (performance.now() - t0) / 1000;
const objects = new Map(codecs.map((codec) => [codec, chunkBlocks(codec)]));

/** Injects `context` tokens of `codec` chunks into `cache`; ms until the GPU has run every write. */
async function inject(cache: KVCacheHandle, codec: CodecName, context: number): Promise<number> {
  const o = objects.get(codec)!;
  const start = performance.now();
  for (let pos = 0; pos < context; pos += chunk) {
    const header = { ...o.header, positionBase: pos };
    for (const block of o.blocks) await backend.writeKVLayer(cache, header, block, pos);
  }
  // Settled once, as a session does (before the question reads the cache), not per chunk.
  await backend.settleKVWrites(cache);
  // A one-row readback waits for the queue: everything injected has run.
  await backend.readKV(cache, 0, 1);
  return performance.now() - start;
}

const runs: Record<string, unknown>[] = [];
for (const context of contexts) {
  const injectFigures: Record<string, { ms: number; GBps: number; grownMs: number }> = {};
  let cache: KVCacheHandle | undefined;
  for (const codec of codecs) {
    cache?.dispose();
    cache = backend.createKVCache(context + question);
    await backend.reserveKV(cache, context + question);
    const ms = await inject(cache, codec, context);
    // Again into the same cache: a second pass (pipelines and staging warm).
    const grownMs = await inject(cache, codec, context);
    injectFigures[codec] = { ms, GBps: ((objects.get(codec)!.bytes * context) / chunk / ms) * 1e-6, grownMs };
  }
  const ids = Uint32Array.from(randomTokenIds(question, c.vocabSize, 7));
  const times: number[] = [];
  for (let i = 0; i <= reps; i++) {
    const s = performance.now();
    await backend.forward(cache!, ids, context, 'last');
    if (i > 0) times.push(performance.now() - s);
  }
  cache!.dispose();
  runs.push({ context, inject: injectFigures, question_ms: median(times), question_runs_ms: times });
}
await backend.dispose();

// One layer's kernels at the question's size, on a device of their own.
const ctx = new GpuContext(await openDevice());
const one = syntheticWeights({ ...c, layers: 1 });
const w = await uploadWeights(ctx, one, ctx.features.shaderF16 ? 'f16' : 'f32');
const lw = w.layers[0]!;
const n = question;
const qDim = c.heads * c.headDim;
const buf = (floats: number): GPUBuffer => ctx.storage(floats * 4, 'profile');
const h = buf(n * Math.max(c.hiddenSize, qDim));
const out = buf(n * Math.max(c.intermediateSize, qDim, c.hiddenSize));
const q = buf(n * qDim);
const cacheK = buf((maxContext + n) * kvDim);
const cacheV = buf((maxContext + n) * kvDim);
const logits = buf(c.vocabSize);

const kernels: Record<string, unknown> = {};
const [wq, wk, wv] = lw.qkv.parts.map((p) => p.w) as [GpuMatrix, GpuMatrix, GpuMatrix];
const [wGate, wUp] = lw.gateUp.parts.map((p) => p.w) as [GpuMatrix, GpuMatrix];
const matmuls = { q: wq, k: wk, v: wv, o: lw.o, gate: wGate, up: wUp, down: lw.down };
const matmulMs: Record<string, { ms: number; tflops: number }> = {};
for (const [name, m] of Object.entries(matmuls)) matmulMs[name] = await timeMatmul(ctx, reps, { x: h, w: m, y: out, m: n });
kernels.matmul_per_layer = matmulMs;
// The forward's products at the question's rows: q, k, v and gate, up each as one product where they split over K
// (where the forward also folds the KV step into the q, k, v reduction, that step is not timed here).
const stackedMs = {
  qkv: await timeRecorded(ctx, reps, (rec) =>
    recordStackedMatmul(ctx, rec, { x: h, w: lw.qkv, m: n, out: { kind: 'columns', ys: [q, buf(n * kvDim), buf(n * kvDim)] } }),
  ),
  gate_up: await timeRecorded(ctx, reps, (rec) =>
    recordStackedMatmul(ctx, rec, { x: h, w: lw.gateUp, m: n, out: { kind: 'swiglu', y: out } }),
  ),
};
kernels.matmul_stacked_per_layer = stackedMs;
kernels.matmul_all_layers_ms = c.layers * (stackedMs.qkv + stackedMs.gate_up + matmulMs.o!.ms + matmulMs.down!.ms);
kernels.lm_head_last_row_ms = (await timeMatmul(ctx, reps, { x: h, w: w.lmHead, y: logits, m: 1 })).ms;
for (const context of contexts) {
  const a = { q, cacheK, cacheV, out, tokens: n, heads: c.heads, kvHeads: c.kvHeads, headDim: c.headDim, posBase: context, window: null };
  const variants: Record<string, number> = { chosen: await timeRecorded(ctx, reps, (rec) => recordAttention(ctx, rec, a)) };
  variants.portable_chosen_splits = await timeRecorded(ctx, reps, (rec) => recordAttentionPortable(ctx, rec, a));
  if (subgroupMatrixAttentionFits(ctx, a)) {
    variants.tensor_cores_no_split = await timeRecorded(ctx, reps, (rec) => recordAttentionSubgroupMatrix(ctx, rec, { ...a, splits: 1 }));
    for (const splits of [4, 16, 32])
      variants[`tensor_cores_${splits}_splits`] = await timeRecorded(ctx, reps, (rec) =>
        recordAttentionSubgroupMatrix(ctx, rec, { ...a, splits }),
      );
  }
  kernels[`attention_per_layer_ms_at_${context}`] = variants;
}
console.log(
  JSON.stringify({ device: ctx.description, backend: backend.device, shape, question, chunk, setupSeconds, runs, kernels }, null, 1),
);
await ctx.dispose();
