import { KdnError } from '../../common/errors.ts';
import type { ModelConfig } from './config.ts';
import { FingerprintHasher } from './fingerprint.ts';
import { loadModelConfig } from './load-config.ts';
import { SafetensorsModel } from './safetensors.ts';
import type { LayerWeights, ModelWeights, Tensor } from './weights.ts';

export interface LoadedModel {
  weights: ModelWeights;
  fingerprint: string;
  /** Parameters as transformers counts them (tied embeddings once). */
  parameters: number;
}

/** HF tensor name -> the shape it must have, for every tensor the runtime uses. */
function expectedTensors(c: ModelConfig): Map<string, number[]> {
  const q = c.heads * c.headDim;
  const kv = c.kvHeads * c.headDim;
  const m = new Map<string, number[]>([
    ['model.embed_tokens.weight', [c.vocabSize, c.hiddenSize]],
    ['model.norm.weight', [c.hiddenSize]],
  ]);
  if (!c.tieWordEmbeddings) m.set('lm_head.weight', [c.vocabSize, c.hiddenSize]);
  for (let l = 0; l < c.layers; l++) {
    const p = `model.layers.${l}.`;
    m.set(`${p}input_layernorm.weight`, [c.hiddenSize]);
    m.set(`${p}self_attn.q_proj.weight`, [q, c.hiddenSize]);
    m.set(`${p}self_attn.k_proj.weight`, [kv, c.hiddenSize]);
    m.set(`${p}self_attn.v_proj.weight`, [kv, c.hiddenSize]);
    m.set(`${p}self_attn.o_proj.weight`, [c.hiddenSize, q]);
    if (c.attentionBias) {
      m.set(`${p}self_attn.q_proj.bias`, [q]);
      m.set(`${p}self_attn.k_proj.bias`, [kv]);
      m.set(`${p}self_attn.v_proj.bias`, [kv]);
    }
    if (c.qkNorm) {
      m.set(`${p}self_attn.q_norm.weight`, [c.headDim]);
      m.set(`${p}self_attn.k_norm.weight`, [c.headDim]);
    }
    m.set(`${p}post_attention_layernorm.weight`, [c.hiddenSize]);
    m.set(`${p}mlp.gate_proj.weight`, [c.intermediateSize, c.hiddenSize]);
    m.set(`${p}mlp.up_proj.weight`, [c.intermediateSize, c.hiddenSize]);
    m.set(`${p}mlp.down_proj.weight`, [c.hiddenSize, c.intermediateSize]);
  }
  return m;
}

/**
 * Loads a Hugging Face model directory into float32 host tensors and fingerprints it in the same pass over the
 * files. A tensor that is missing or has the wrong shape is MODEL_INVALID naming it; tensors the runtime does not
 * use (e.g. rotary inv_freq buffers) are only fingerprinted.
 */
export async function loadModelWeights(modelDir: string, config?: ModelConfig): Promise<LoadedModel> {
  const cfg = config ?? (await loadModelConfig(modelDir));
  const expected = expectedTensors(cfg);
  const files = await SafetensorsModel.open(modelDir);
  const hasher = new FingerprintHasher(cfg);
  let tensors: Map<string, Tensor>;
  try {
    tensors = await readTensors(files, expected, hasher, `a ${cfg.architecture} with this config.json`, modelDir);
  } finally {
    await files.close();
  }
  let parameters = 0;
  for (const tensor of tensors.values()) parameters += tensor.data.length;
  return { weights: assemble(cfg, (name) => tensors.get(name)!), fingerprint: hasher.digest(), parameters };
}

/**
 * Every tensor `expected` names, read as float32 and checked against its shape; every file's bytes go through
 * `hasher`, tensors the runtime does not use too. `needs` says who needs a missing tensor, for its error.
 */
async function readTensors(
  files: SafetensorsModel,
  expected: Map<string, number[]>,
  hasher: FingerprintHasher,
  needs: string,
  modelDir: string,
): Promise<Map<string, Tensor>> {
  for (const name of expected.keys()) {
    if (!files.entry(name)) {
      throw new KdnError('MODEL_INVALID', `tensor ${name} is missing from ${modelDir}`, {
        hint: `${needs} needs it; the safetensors files do not match the config`,
      });
    }
  }
  const tensors = new Map<string, Tensor>();
  for (const name of files.names()) {
    const entry = files.entry(name)!;
    hasher.beginTensor(entry);
    const shape = expected.get(name);
    if (shape === undefined) {
      for await (const raw of files.rawChunks(entry)) hasher.update(raw);
      continue;
    }
    if (entry.shape.length !== shape.length || entry.shape.some((d, i) => d !== shape[i])) {
      throw new KdnError('MODEL_INVALID', `tensor ${name} has shape [${entry.shape}], config.json implies [${shape}]`);
    }
    tensors.set(name, { shape, data: await files.readFloat32(entry, (raw) => hasher.update(raw)) });
  }
  return tensors;
}

/** The model's weights from its tensors by Hugging Face name (`t`), as the config says they are laid out. */
function assemble(cfg: ModelConfig, t: (name: string) => Tensor): ModelWeights {
  const layers: LayerWeights[] = [];
  for (let l = 0; l < cfg.layers; l++) {
    const p = `model.layers.${l}.`;
    layers.push({
      inputNorm: t(`${p}input_layernorm.weight`),
      q: t(`${p}self_attn.q_proj.weight`),
      k: t(`${p}self_attn.k_proj.weight`),
      v: t(`${p}self_attn.v_proj.weight`),
      o: t(`${p}self_attn.o_proj.weight`),
      ...(cfg.attentionBias
        ? { qBias: t(`${p}self_attn.q_proj.bias`), kBias: t(`${p}self_attn.k_proj.bias`), vBias: t(`${p}self_attn.v_proj.bias`) }
        : {}),
      ...(cfg.qkNorm ? { qNorm: t(`${p}self_attn.q_norm.weight`), kNorm: t(`${p}self_attn.k_norm.weight`) } : {}),
      postAttentionNorm: t(`${p}post_attention_layernorm.weight`),
      gate: t(`${p}mlp.gate_proj.weight`),
      up: t(`${p}mlp.up_proj.weight`),
      down: t(`${p}mlp.down_proj.weight`),
    });
  }
  const embed = t('model.embed_tokens.weight');
  return { config: cfg, embed, layers, finalNorm: t('model.norm.weight'), lmHead: cfg.tieWordEmbeddings ? embed : t('lm_head.weight') };
}
