/**
 * The model's weights on the GPU: linear weights as GpuMatrix (f16-packed or f32, one choice for the model; in the
 * blocks layout where the tensor-core matmuls read them), norms, biases and RoPE inverse frequencies as f32. Tied
 * embeddings share one buffer with lm_head; a layer's q, k and v share one where they can, as do gate and up
 * (stacked-matrix.ts).
 */
import type { LayerWeights, ModelWeights, Tensor } from '../model/weights.ts';
import { ropeInvFreq } from '../cpu/kernels/rope.ts';
import type { GpuContext } from './gpu-context.ts';
import { BLOCK_COLS, uploadMatrixF16, uploadMatrixF32, type GpuMatrix, type MatrixLayout } from './gpu-matrix.ts';
import { uploadStackedF16, type StackedMatrix, type StackedPart } from './stacked-matrix.ts';

export type WeightPrecision = 'f16' | 'f32';

export interface GpuLayerWeights {
  inputNorm: GPUBuffer;
  /** q, k and v with their biases (Qwen2's), stacked where they can be. */
  qkv: StackedMatrix;
  o: GpuMatrix;
  qNorm?: GPUBuffer;
  kNorm?: GPUBuffer;
  postAttentionNorm: GPUBuffer;
  /** gate and up, stacked where they can be. */
  gateUp: StackedMatrix;
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
  const layoutOf = (t: Tensor, forMatmul: boolean): MatrixLayout =>
    forMatmul && blocks && (t.shape[1] ?? 0) % BLOCK_COLS === 0 ? 'blocks' : 'rows';
  const matrix = async (t: Tensor, label: string, forMatmul = true): Promise<GpuMatrix> => {
    const m = precision === 'f16' ? await uploadMatrixF16(ctx, t, label, layoutOf(t, forMatmul)) : uploadMatrixF32(ctx, t, label);
    buffers.push(m.buffer);
    return m;
  };
  const stack = async (parts: { name: string; w: Tensor; bias?: Tensor }[], label: string): Promise<StackedMatrix> => {
    const name = `${label} ${parts.map((p) => p.name).join('|')}`;
    const biases = parts.map((p) => (p.bias ? vector(p.bias, `${label} ${p.name} bias`) : undefined));
    const stacked =
      precision === 'f16'
        ? await uploadStackedF16(
            ctx,
            parts.map((p) => p.w),
            name,
            layoutOf(parts[0]!.w, true),
          )
        : null;
    if (stacked === null) {
      const separate: StackedPart[] = [];
      for (const [i, p] of parts.entries()) separate.push({ w: await matrix(p.w, `${label} ${p.name}`), bias: biases[i] });
      return { whole: null, parts: separate };
    }
    buffers.push(stacked.buffer);
    const bias = parts.some((p) => p.bias) ? vector(stackedBias(parts, stacked.parts), `${name} bias`) : undefined;
    return { whole: { w: stacked.whole, bias }, parts: stacked.parts.map((w, i) => ({ w, bias: biases[i] })) };
  };
  try {
    const embed = await matrix(weights.embed, 'embed', false);
    const lmHead = weights.lmHead === weights.embed ? embed : await matrix(weights.lmHead, 'lm_head');
    const layers: GpuLayerWeights[] = [];
    for (const [i, w] of weights.layers.entries()) layers.push(await uploadLayer(w, `layer ${i}`, vector, matrix, stack));
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
  stack: (parts: { name: string; w: Tensor; bias?: Tensor }[], label: string) => Promise<StackedMatrix>,
): Promise<GpuLayerWeights> {
  const optional = (t: Tensor | undefined, name: string): GPUBuffer | undefined => (t ? vector(t, `${label} ${name}`) : undefined);
  const qkv = [
    { name: 'q', w: w.q, bias: w.qBias },
    { name: 'k', w: w.k, bias: w.kBias },
    { name: 'v', w: w.v, bias: w.vBias },
  ];
  return {
    inputNorm: vector(w.inputNorm, `${label} input norm`),
    qkv: await stack(qkv, label),
    o: await matrix(w.o, `${label} o`),
    qNorm: optional(w.qNorm, 'q norm'),
    kNorm: optional(w.kNorm, 'k norm'),
    postAttentionNorm: vector(w.postAttentionNorm, `${label} post-attention norm`),
    gateUp: await stack(
      [
        { name: 'gate', w: w.gate },
        { name: 'up', w: w.up },
      ],
      label,
    ),
    down: await matrix(w.down, `${label} down`),
  };
}

/** The parts' biases end to end, zeros for a part without one: the bias of their stacked product. */
function stackedBias(parts: { bias?: Tensor }[], matrices: GpuMatrix[]): Tensor {
  const data = new Float32Array(matrices.reduce((n, m) => n + m.rows, 0));
  let at = 0;
  for (const [i, m] of matrices.entries()) {
    if (parts[i]!.bias) data.set(parts[i]!.bias!.data, at);
    at += m.rows;
  }
  return { shape: [data.length], data };
}
