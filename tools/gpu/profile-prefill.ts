/**
 * Where prefill time goes on the WebGPU backend: times each kernel of one layer for a chunk of --chunk tokens
 * (each op recorded --reps times into one submission, so launch overhead is amortised as in a real forward), the
 * attention of every chunk of a --tokens prefill, and the lm_head; scales per-layer figures by the layer count and
 * prints one JSON object. Run on a host with an NVIDIA GPU (docs/GPU.md):
 *   node --import tsx tools/gpu/profile-prefill.ts --shape llama3.2-1b --tokens 4096
 */
import { parseArgs } from 'node:util';
import { openDevice } from '../../engine-adapter/webgpu/device.ts';
import { GpuContext } from '../../engine-adapter/webgpu/gpu-context.ts';
import type { GpuMatrix } from '../../engine-adapter/webgpu/gpu-matrix.ts';
import { uploadWeights } from '../../engine-adapter/webgpu/gpu-weights.ts';
import { recordAttention } from '../../engine-adapter/webgpu/kernels/attention.ts';
import { recordRmsNorm } from '../../engine-adapter/webgpu/kernels/rmsnorm.ts';
import { recordRope } from '../../engine-adapter/webgpu/kernels/rope.ts';
import { syntheticWeights } from '../../bench/lib/synthetic-engine.ts';
import { shapeConfig, timeMatmul, timeRecorded } from './profile-support.ts';

const { values } = parseArgs({
  options: {
    shape: { type: 'string', default: 'llama3.2-1b' },
    tokens: { type: 'string', default: '4096' },
    chunk: { type: 'string', default: '1024' },
    reps: { type: 'string', default: '5' },
  },
});
const shape = values.shape;
const c = shapeConfig(shape);
const total = Number(values.tokens);
const n = Number(values.chunk);
const reps = Number(values.reps);

const ctx = new GpuContext(await openDevice());
const w = await uploadWeights(ctx, syntheticWeights(c), ctx.features.shaderF16 ? 'f16' : 'f32');
const lw = w.layers[0]!;
const qDim = c.heads * c.headDim;
const kvDim = c.kvHeads * c.headDim;
const buf = (floats: number): GPUBuffer => ctx.storage(floats * 4, 'profile');
const x = buf(n * c.hiddenSize);
const h = buf(n * c.hiddenSize);
const q = buf(n * qDim);
const k = buf(n * kvDim);
const attn = buf(n * qDim);
const gate = buf(n * c.intermediateSize);
const cacheK = buf(total * kvDim);
const cacheV = buf(total * kvDim);
const logits = buf(c.vocabSize);

const perLayer: Record<string, { ms: number; tflops?: number }> = {};
// A chunk's grid fills the GPU unsplit, so the forward runs stacked q, k, v and gate, up part by part (matmul-stacked.ts).
const [wq, wk, wv] = lw.qkv.parts.map((p) => p.w) as [GpuMatrix, GpuMatrix, GpuMatrix];
const [wGate, wUp] = lw.gateUp.parts.map((p) => p.w) as [GpuMatrix, GpuMatrix];
const matmuls = { q: wq, k: wk, v: wv, o: lw.o, gate: wGate, up: wUp, down: lw.down };
const inputs = { q: h, k: h, v: h, o: attn, gate: h, up: h, down: gate };
// As record-forward.ts: o and down are added to the residual stream, and up makes gate SwiGLU's output, as they finish.
const outputs = { q, k, v: k, o: x, gate, up: gate, down: x };
const into = { o: 'add', up: 'swiglu', down: 'add' } as const;
for (const name of Object.keys(matmuls) as (keyof typeof matmuls)[]) {
  const a = { x: inputs[name], w: matmuls[name], y: outputs[name], m: n, into: name in into ? into[name as keyof typeof into] : undefined };
  perLayer[`matmul_${name}`] = await timeMatmul(ctx, reps, a);
}
perLayer.rmsnorm_x2 = {
  ms:
    2 *
    (await timeRecorded(ctx, reps, (rec) =>
      recordRmsNorm(ctx, rec, { x, weight: lw.inputNorm, out: h, rows: n, n: c.hiddenSize, eps: c.rmsNormEps }),
    )),
};
perLayer.rope_qk = {
  ms: await timeRecorded(ctx, reps, (rec) => {
    recordRope(ctx, rec, { x: q, invFreq: w.invFreq, tokens: n, heads: c.heads, headDim: c.headDim, posBase: 0 });
    recordRope(ctx, rec, { x: k, invFreq: w.invFreq, tokens: n, heads: c.kvHeads, headDim: c.headDim, posBase: 0 });
  }),
};
let attentionMs = 0;
const attentionByChunk: Record<string, number> = {};
for (let pos = 0; pos < total; pos += n) {
  const ms = await timeRecorded(ctx, reps, (rec) =>
    recordAttention(ctx, rec, {
      q,
      cacheK,
      cacheV,
      out: attn,
      tokens: n,
      heads: c.heads,
      kvHeads: c.kvHeads,
      headDim: c.headDim,
      posBase: pos,
      window: null,
    }),
  );
  attentionByChunk[`pos_${pos}`] = ms;
  attentionMs += ms;
}
const lmHeadMs = (await timeMatmul(ctx, reps, { x: h, w: w.lmHead, y: logits, m: 1 })).ms;
const chunks = Math.ceil(total / n);
const layerChunkMs = Object.values(perLayer).reduce((s, v) => s + v.ms, 0);
const estimate = {
  matmul_ms:
    chunks *
    c.layers *
    Object.entries(perLayer)
      .filter(([k2]) => k2.startsWith('matmul'))
      .reduce((s, [, v]) => s + v.ms, 0),
  attention_ms: c.layers * attentionMs,
  other_ms:
    chunks *
    c.layers *
    Object.entries(perLayer)
      .filter(([k2]) => !k2.startsWith('matmul'))
      .reduce((s, [, v]) => s + v.ms, 0),
  lm_head_ms: lmHeadMs,
  total_ms: chunks * c.layers * layerChunkMs + c.layers * attentionMs + lmHeadMs,
};
const kernels =
  ctx.features.subgroupMatrix && w.precision === 'f16'
    ? `subgroup-matrix (tensor core, ${ctx.features.subgroupMatrix.syntax})`
    : `portable (${ctx.features.subgroupMatrixAbsence ?? `${w.precision} weights`})`;
console.log(
  JSON.stringify(
    {
      device: ctx.description,
      kernels,
      shape,
      tokens: total,
      chunk: n,
      perLayerPerChunk: perLayer,
      attentionPerLayerByChunk: attentionByChunk,
      estimate,
    },
    null,
    1,
  ),
);
await ctx.dispose();
