import { join } from 'node:path';
import { z } from 'zod';
import { KdnError } from '../../common/errors.ts';
import type { Architecture, ModelConfig, RopeScaling } from './config.ts';
import { readModelJson, readOptionalModelJson } from './read-json-file.ts';

const ARCHITECTURES: readonly Architecture[] = ['LlamaForCausalLM', 'MistralForCausalLM', 'Qwen2ForCausalLM', 'Qwen3ForCausalLM'];

const positiveInt = z.number().int().positive();
const tokenIds = z.union([z.number().int().nonnegative(), z.array(z.number().int().nonnegative())]).nullish();

// rope_scaling (transformers <= 4.x) and rope_parameters (5.x) carry the same fields; `type` is the old spelling.
const ropeSchema = z
  .object({
    rope_type: z.string().optional(),
    type: z.string().optional(),
    rope_theta: z.number().positive().optional(),
    factor: z.number().positive().optional(),
    low_freq_factor: z.number().positive().optional(),
    high_freq_factor: z.number().positive().optional(),
    original_max_position_embeddings: positiveInt.optional(),
  })
  .loose();

const configSchema = z
  .object({
    architectures: z.array(z.string()).min(1),
    vocab_size: positiveInt,
    hidden_size: positiveInt,
    intermediate_size: positiveInt,
    num_hidden_layers: positiveInt,
    num_attention_heads: positiveInt,
    num_key_value_heads: positiveInt.nullish(),
    head_dim: positiveInt.nullish(),
    rms_norm_eps: z.number().positive(),
    rope_theta: z.number().positive().nullish(),
    rope_scaling: ropeSchema.nullish(),
    rope_parameters: ropeSchema.nullish(),
    max_position_embeddings: positiveInt,
    tie_word_embeddings: z.boolean().nullish(),
    attention_bias: z.boolean().nullish(),
    mlp_bias: z.boolean().nullish(),
    hidden_act: z.string().nullish(),
    sliding_window: positiveInt.nullish(),
    use_sliding_window: z.boolean().nullish(),
    bos_token_id: tokenIds,
    eos_token_id: tokenIds,
  })
  .loose();

type RawConfig = z.infer<typeof configSchema>;

function unsupported(what: string, source: string): KdnError {
  return new KdnError('MODEL_UNSUPPORTED', `${what} (${source})`, {
    hint: `supported: ${ARCHITECTURES.join(', ')} with silu MLPs and default or llama3 RoPE`,
  });
}

function idList(v: number | number[] | null | undefined): number[] {
  if (v === null || v === undefined) return [];
  return Array.isArray(v) ? v : [v];
}

function parseRope(raw: RawConfig, source: string): { theta: number; scaling: RopeScaling | null } {
  const rope = raw.rope_parameters ?? raw.rope_scaling ?? null;
  const theta = raw.rope_theta ?? raw.rope_parameters?.rope_theta ?? 10000;
  const type = rope?.rope_type ?? rope?.type ?? 'default';
  if (type === 'default') return { theta, scaling: null };
  if (type !== 'llama3') throw unsupported(`unsupported rope type "${type}"`, source);
  const { factor, low_freq_factor, high_freq_factor, original_max_position_embeddings } = rope ?? {};
  if (
    factor === undefined ||
    low_freq_factor === undefined ||
    high_freq_factor === undefined ||
    original_max_position_embeddings === undefined
  ) {
    throw new KdnError(
      'MODEL_INVALID',
      `llama3 rope scaling needs factor, low_freq_factor, high_freq_factor and original_max_position_embeddings (${source})`,
    );
  }
  return {
    theta,
    scaling: {
      type: 'llama3',
      factor,
      lowFreqFactor: low_freq_factor,
      highFreqFactor: high_freq_factor,
      originalMaxPositionEmbeddings: original_max_position_embeddings,
    },
  };
}

/**
 * Normalizes a parsed config.json. `generationConfig` (generation_config.json, optional) may add eos tokens, as
 * Llama 3 instruct models do. `source` names the file in errors.
 */
export function parseModelConfig(json: unknown, source: string, generationConfig?: unknown): ModelConfig {
  const parsed = configSchema.safeParse(json);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new KdnError('MODEL_INVALID', `invalid model config ${source}: ${issue.path.join('.') || '(root)'}: ${issue.message}`);
  }
  const raw = parsed.data;
  const name = raw.architectures[0]!;
  if (!(ARCHITECTURES as readonly string[]).includes(name)) throw unsupported(`unsupported architecture "${name}"`, source);
  const architecture = name as Architecture;
  if ((raw.hidden_act ?? 'silu') !== 'silu') throw unsupported(`unsupported activation "${raw.hidden_act}"`, source);
  if (raw.mlp_bias) throw unsupported('MLP biases are not supported', source);
  // Qwen2's biases are fixed on q/k/v; elsewhere attention_bias also puts a bias on o_proj, which no model we
  // target uses.
  if (architecture !== 'Qwen2ForCausalLM' && raw.attention_bias)
    throw unsupported(`attention_bias on ${architecture} is not supported`, source);
  // Qwen's sliding window applies to a subset of layers only; released checkpoints keep it off.
  if (architecture.startsWith('Qwen') && raw.use_sliding_window) throw unsupported('Qwen use_sliding_window is not supported', source);

  const heads = raw.num_attention_heads;
  const kvHeads = raw.num_key_value_heads ?? heads;
  if (heads % kvHeads !== 0)
    throw new KdnError('MODEL_INVALID', `num_attention_heads ${heads} is not a multiple of num_key_value_heads ${kvHeads} (${source})`);
  // Qwen3Config's head_dim defaults to 128 rather than hidden/heads.
  const headDim = raw.head_dim ?? (architecture === 'Qwen3ForCausalLM' ? 128 : raw.hidden_size / heads);
  if (!Number.isInteger(headDim) || headDim % 2 !== 0)
    throw new KdnError('MODEL_INVALID', `head_dim ${headDim} must be an even integer (${source})`);
  const rope = parseRope(raw, source);

  const gen = z
    .object({ bos_token_id: tokenIds, eos_token_id: tokenIds })
    .loose()
    .safeParse(generationConfig ?? {});
  const eos = new Set([...idList(raw.eos_token_id), ...(gen.success ? idList(gen.data.eos_token_id) : [])]);
  const bos = idList(raw.bos_token_id)[0] ?? (gen.success ? idList(gen.data.bos_token_id)[0] : undefined);

  return {
    architecture,
    vocabSize: raw.vocab_size,
    hiddenSize: raw.hidden_size,
    intermediateSize: raw.intermediate_size,
    layers: raw.num_hidden_layers,
    heads,
    kvHeads,
    headDim,
    rmsNormEps: raw.rms_norm_eps,
    ropeTheta: rope.theta,
    ropeScaling: rope.scaling,
    maxPositionEmbeddings: raw.max_position_embeddings,
    // transformers' PretrainedConfig default is tied; Llama/Mistral/Qwen configs override it to false.
    tieWordEmbeddings: raw.tie_word_embeddings ?? false,
    attentionBias: architecture === 'Qwen2ForCausalLM',
    qkNorm: architecture === 'Qwen3ForCausalLM',
    slidingWindow: architecture === 'MistralForCausalLM' ? (raw.sliding_window ?? null) : null,
    bosTokenId: bos,
    eosTokenIds: [...eos],
  };
}

/** Loads `<modelDir>/config.json` (and generation_config.json when present) into a ModelConfig. */
export async function loadModelConfig(modelDir: string): Promise<ModelConfig> {
  const path = join(modelDir, 'config.json');
  const json = await readModelJson(path);
  const generation = await readOptionalModelJson(join(modelDir, 'generation_config.json'));
  return parseModelConfig(json, path, generation);
}
