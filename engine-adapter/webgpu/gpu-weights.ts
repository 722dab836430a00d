/**
 * The model's weights on the GPU: linear weights as GpuMatrix (f16-packed or f32, one choice for the model; in the
 * blocks layout where the tensor-core matmuls read them), norms, biases and RoPE inverse frequencies as f32. Tied
 * embeddings share one buffer with lm_head.
 */
import type { LayerWeights, ModelWeights, Tensor } from '../model/weights.ts';
import { ropeInvFreq } from '../cpu/kernels/rope.ts';
import type { GpuContext } from './gpu-context.ts';
import { BLOCK_COLS, uploadMatrixF16, uploadMatrixF32, type GpuMatrix } from './gpu-matrix.ts';

export type WeightPrecision = 'f16' | 'f32';

export interface GpuLayerWeights {
  inputNorm: GPUBuffer;
  q: GpuMatrix;
  k: GpuMatrix;
  v: GpuMatrix;
  o: GpuMatrix;
  qBias?: GPUBuffer;
  kBias?: GPUBuffer;
  vBias?: GPUBuffer;
  qNorm?: GPUBuffer;
  kNorm?: GPUBuffer;
  postAttentionNorm: GPUBuffer;
  gate: GpuMatrix;
  up: GpuMatrix;
  down: GpuMatrix;
}

export interface GpuModelWeights {
  precision: WeightPrecision;
  embed: GpuMatrix;
  lmHead: GpuMatrix;
  finalNorm: GPUBuffer;
  invFreq: GPUBuffer;
  layers: GpuLayerWeights[];
  /** Total bytes uploaded. */
  bytes: number;
  destroy(): void;
}

export async function uploadWeights(ctx: GpuContext, weights: ModelWeights, precision: WeightPrecision): Promise<GpuModelWeights> {
  const buffers: GPUBuffer[] = [];
  const vector = (t: Tensor, label: string): GPUBuffer => {
    const b = ctx.upload(t.data, label);
    buffers.push(b);
    return b;
  };
  // The tensor-core matmuls read weights fastest in blocks; the embedding lookup reads rows, so a tied lm_head keeps them.
  const blocks = ctx.features.subgroupMatrix !== null;
  const matrix = async (t: Tensor, label: string, forMatmul = true): Promise<GpuMatrix> => {
    const layout = forMatmul && blocks && (t.shape[1] ?? 0) % BLOCK_COLS === 0 ? 'blocks' : 'rows';
    const m = precision === 'f16' ? await uploadMatrixF16(ctx, t, label, layout) : uploadMatrixF32(ctx, t, label);
    buffers.push(m.buffer);
    return m;
  };
  try {
    const embed = await matrix(weights.embed, 'embed', false);
    const lmHead = weights.lmHead === weights.embed ? embed : await matrix(weights.lmHead, 'lm_head');
    const layers: GpuLayerWeights[] = [];
    for (const [i, w] of weights.layers.entries()) layers.push(await uploadLayer(w, `layer ${i}`, vector, matrix));
    const invFreq = ropeInvFreq(weights.config);
    return {
      precision,
      embed,
      lmHead,
      finalNorm: vector(weights.finalNorm, 'final norm'),
      invFreq: vector({ shape: [invFreq.length], data: invFreq }, 'inv freq'),
      layers,
      bytes: buffers.reduce((sum, b) => sum + b.size, 0),
      destroy: () => buffers.forEach((b) => b.destroy()),
    };
  } catch (err) {
    buffers.forEach((b) => b.destroy());
    throw err;
  }
}

async function uploadLayer(
  w: LayerWeights,
  label: string,
  vector: (t: Tensor, label: string) => GPUBuffer,
  matrix: (t: Tensor, label: string) => Promise<GpuMatrix>,
): Promise<GpuLayerWeights> {
  const optional = (t: Tensor | undefined, name: string): GPUBuffer | undefined => (t ? vector(t, `${label} ${name}`) : undefined);
  return {
    inputNorm: vector(w.inputNorm, `${label} input norm`),
    q: await matrix(w.q, `${label} q`),
    k: await matrix(w.k, `${label} k`),
    v: await matrix(w.v, `${label} v`),
    o: await matrix(w.o, `${label} o`),
    qBias: optional(w.qBias, 'q bias'),
    kBias: optional(w.kBias, 'k bias'),
    vBias: optional(w.vBias, 'v bias'),
    qNorm: optional(w.qNorm, 'q norm'),
    kNorm: optional(w.kNorm, 'k norm'),
    postAttentionNorm: vector(w.postAttentionNorm, `${label} post-attention norm`),
    gate: await matrix(w.gate, `${label} gate`),
    up: await matrix(w.up, `${label} up`),
    down: await matrix(w.down, `${label} down`),
  };
}
