import type { ModelInfo } from '../types.ts';
import type { ModelConfig } from './config.ts';
import { fingerprintModel } from './fingerprint.ts';
import { loadModelConfig } from './load-config.ts';

/** fp16 KV bytes per token: K and V, every layer, every kv head, 2 bytes an element. */
export function kvBytesPerToken(config: ModelConfig): number {
  return 2 * config.layers * config.kvHeads * config.headDim * 2;
}

/** Parameters as transformers counts them: every weight once, tied embeddings once. */
export function parameterCount(config: ModelConfig): number {
  const c = config;
  const q = c.heads * c.headDim;
  const kv = c.kvHeads * c.headDim;
  const perLayer =
    2 * c.hiddenSize + // input and post-attention norms
    c.hiddenSize * (q + 2 * kv) +
    q * c.hiddenSize +
    (c.attentionBias ? q + 2 * kv : 0) +
    (c.qkNorm ? 2 * c.headDim : 0) +
    3 * c.hiddenSize * c.intermediateSize;
  const embeddings = c.vocabSize * c.hiddenSize * (c.tieWordEmbeddings ? 1 : 2);
  return embeddings + c.layers * perLayer + c.hiddenSize;
}

export function buildModelInfo(config: ModelConfig, path: string, fingerprint: string): ModelInfo {
  return {
    architecture: config.architecture,
    path,
    layers: config.layers,
    hiddenSize: config.hiddenSize,
    intermediateSize: config.intermediateSize,
    heads: config.heads,
    kvHeads: config.kvHeads,
    headDim: config.headDim,
    vocabSize: config.vocabSize,
    maxPositionEmbeddings: config.maxPositionEmbeddings,
    parameters: parameterCount(config),
    kvBytesPerToken: kvBytesPerToken(config),
    fingerprint,
  };
}

/** ModelInfo of a model directory without loading its weights into memory (the fingerprint streams them). */
export async function readModelInfo(modelDir: string): Promise<ModelInfo> {
  const config = await loadModelConfig(modelDir);
  return buildModelInfo(config, modelDir, await fingerprintModel(modelDir, config));
}
