/** The model hyper-parameters the runtime needs, normalized from a Hugging Face config.json (see ./load-config.ts). */

export type Architecture = 'LlamaForCausalLM' | 'MistralForCausalLM' | 'Qwen2ForCausalLM' | 'Qwen3ForCausalLM';

export interface RopeScaling {
  /** Llama 3 frequency-dependent scaling; other types are rejected at load. */
  type: 'llama3';
  factor: number;
  lowFreqFactor: number;
  highFreqFactor: number;
  originalMaxPositionEmbeddings: number;
}

export interface ModelConfig {
  architecture: Architecture;
  vocabSize: number;
  hiddenSize: number;
  intermediateSize: number;
  layers: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  rmsNormEps: number;
  ropeTheta: number;
  ropeScaling: RopeScaling | null;
  maxPositionEmbeddings: number;
  tieWordEmbeddings: boolean;
  /** Qwen2: q/k/v projections carry biases. */
  attentionBias: boolean;
  /** Qwen3: RMSNorm over each head of q and k before RoPE. */
  qkNorm: boolean;
  /** Mistral sliding window; null = full attention. */
  slidingWindow: number | null;
  bosTokenId: number | undefined;
  eosTokenIds: number[];
}
