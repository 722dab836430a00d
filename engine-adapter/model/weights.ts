import type { ModelConfig } from './config.ts';

/**
 * A weight matrix or vector in float32 on the host, row-major. Linear weights keep Hugging Face's
 * [outFeatures][inFeatures] orientation: y = W x.
 */
export interface Tensor {
  shape: number[];
  data: Float32Array;
}

export interface LayerWeights {
  inputNorm: Tensor;
  q: Tensor;
  k: Tensor;
  v: Tensor;
  o: Tensor;
  qBias?: Tensor;
  kBias?: Tensor;
  vBias?: Tensor;
  /** Qwen3 per-head RMSNorm weights, [headDim]. */
  qNorm?: Tensor;
  kNorm?: Tensor;
  postAttentionNorm: Tensor;
  gate: Tensor;
  up: Tensor;
  down: Tensor;
}

export interface ModelWeights {
  config: ModelConfig;
  embed: Tensor;
  layers: LayerWeights[];
  finalNorm: Tensor;
  /** The same object as `embed` when embeddings are tied. */
  lmHead: Tensor;
}
