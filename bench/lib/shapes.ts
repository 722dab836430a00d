/**
 * Model shapes the speed benchmarks run with random weights, as Hugging Face config.json objects: the engine
 * parses them with parseModelConfig and bench/peer_prefill.py builds the same model in transformers from them,
 * so both sides run exactly one shape. The shapes are those of the peer table in docs/ANCHORS.md.
 */
export type HfConfig = Record<string, unknown>;

const LLAMA3_COMMON: HfConfig = {
  architectures: ['LlamaForCausalLM'],
  model_type: 'llama',
  vocab_size: 128256,
  num_key_value_heads: 8,
  hidden_act: 'silu',
  max_position_embeddings: 131072,
  rms_norm_eps: 1e-5,
  rope_theta: 500000.0,
  attention_bias: false,
  mlp_bias: false,
  bos_token_id: 128000,
  eos_token_id: 128001,
};

export const SYNTHETIC_SHAPES: Record<string, HfConfig> = {
  'llama3.2-1b': {
    ...LLAMA3_COMMON,
    hidden_size: 2048,
    intermediate_size: 8192,
    num_hidden_layers: 16,
    num_attention_heads: 32,
    head_dim: 64,
    tie_word_embeddings: true,
    rope_scaling: {
      rope_type: 'llama3',
      factor: 32.0,
      low_freq_factor: 1.0,
      high_freq_factor: 4.0,
      original_max_position_embeddings: 8192,
    },
  },
  'llama3.1-8b': {
    ...LLAMA3_COMMON,
    hidden_size: 4096,
    intermediate_size: 14336,
    num_hidden_layers: 32,
    num_attention_heads: 32,
    head_dim: 128,
    tie_word_embeddings: false,
    rope_scaling: { rope_type: 'llama3', factor: 8.0, low_freq_factor: 1.0, high_freq_factor: 4.0, original_max_position_embeddings: 8192 },
  },
  /** The shape of tools/make-tiny-models.ts's llama, for smoke runs. */
  tiny: {
    architectures: ['LlamaForCausalLM'],
    model_type: 'llama',
    vocab_size: 320,
    hidden_size: 64,
    intermediate_size: 128,
    num_hidden_layers: 2,
    num_attention_heads: 4,
    num_key_value_heads: 2,
    head_dim: 16,
    hidden_act: 'silu',
    max_position_embeddings: 8192,
    rms_norm_eps: 1e-5,
    rope_theta: 500000.0,
    tie_word_embeddings: true,
    bos_token_id: 274,
    eos_token_id: 278,
  },
};

/** Shapes a benchmark accepts: the synthetic ones, plus `shipped` (models/kdn-reader, real weights). */
export const SHAPE_NAMES = ['shipped', ...Object.keys(SYNTHETIC_SHAPES)] as const;
