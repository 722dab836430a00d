/**
 * Small random-weight models of each supported architecture in Hugging Face format, for tests and for the GPU
 * machine's comparison against transformers (which loads these same files, so config keys and tensor names are
 * exactly HF's). No network.
 *
 *   node --import tsx tools/make-tiny-models.ts <outDir> [--arch llama|mistral|qwen2|qwen3|<HF architecture>|all]
 *     [--dtype bf16|fp16|fp32] [--shards N] [--seed N]
 *
 * writes one model directory per architecture under <outDir>/<arch as given> (all: llama, mistral, qwen2, qwen3);
 * --arch takes the short name or the HF class name (e.g. LlamaForCausalLM).
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { Command, Option } from 'commander';
import type { Architecture } from '../engine-adapter/model/config.ts';
import { writeSafetensors, type TensorToWrite } from '../engine-adapter/model/safetensors-write.ts';
import type { SafetensorsDtype } from '../engine-adapter/model/safetensors.ts';
import { mulberry32 } from '../common/rng.ts';

export type TinyDtype = 'bf16' | 'fp16' | 'fp32';

export interface TinyModelOptions {
  architecture: Architecture;
  dtype?: TinyDtype;
  /** 1 (default): model.safetensors; more: model-0000i-of-0000n.safetensors plus the index. */
  shards?: number;
  seed?: number;
  hiddenSize?: number;
  intermediateSize?: number;
  layers?: number;
  heads?: number;
  kvHeads?: number;
  /** Defaults to hidden/heads, except Qwen3 which gets 2x that to exercise an explicit head_dim. */
  headDim?: number;
  vocabSize?: number;
  /** Mistral only; default 32 so tests cross the window. */
  slidingWindow?: number | null;
  tieWordEmbeddings?: boolean;
}

export const TINY_ARCHITECTURES: Record<string, Architecture> = {
  llama: 'LlamaForCausalLM',
  mistral: 'MistralForCausalLM',
  qwen2: 'Qwen2ForCausalLM',
  qwen3: 'Qwen3ForCausalLM',
};

const DTYPES: Record<TinyDtype, { safetensors: SafetensorsDtype; torch: string }> = {
  bf16: { safetensors: 'BF16', torch: 'bfloat16' },
  fp16: { safetensors: 'F16', torch: 'float16' },
  fp32: { safetensors: 'F32', torch: 'float32' },
};

/** GPT-2's byte -> printable character map that byte-level BPE vocabularies are written in. */
function bytesToUnicode(): string[] {
  const printable: number[] = [];
  for (let b = 0x21; b <= 0x7e; b++) printable.push(b);
  for (let b = 0xa1; b <= 0xac; b++) printable.push(b);
  for (let b = 0xae; b <= 0xff; b++) printable.push(b);
  const map: string[] = new Array(256);
  let extra = 0;
  for (let b = 0; b < 256; b++) map[b] = String.fromCodePoint(printable.includes(b) ? b : 256 + extra++);
  return map;
}

const MERGES = [
  'Ġ t',
  'h e',
  'i n',
  'e r',
  'a n',
  'Ġ a',
  'o n',
  'r e',
  'Ġt he',
  'Ġ s',
  'e n',
  'o r',
  'Ġ w',
  'a t',
  'Ġ o',
  'in g',
  'Ġ b',
  'l l',
];

interface Family {
  specials: string[];
  bos: string | null;
  eos: string;
  chatTemplate: string;
}

const LLAMA3: Family = {
  specials: ['<|begin_of_text|>', '<|end_of_text|>', '<|start_header_id|>', '<|end_header_id|>', '<|eot_id|>'],
  bos: '<|begin_of_text|>',
  eos: '<|eot_id|>',
  chatTemplate:
    "{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}",
};
const MISTRAL: Family = {
  specials: ['<s>', '</s>', '[INST]', '[/INST]'],
  bos: '<s>',
  eos: '</s>',
  chatTemplate:
    "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'assistant' %}{{ message['content'] + eos_token }}{% else %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% endif %}{% endfor %}",
};
const CHATML: Family = {
  specials: ['<|endoftext|>', '<|im_start|>', '<|im_end|>'],
  bos: null,
  eos: '<|im_end|>',
  chatTemplate:
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}",
};

function family(arch: Architecture): Family {
  if (arch === 'LlamaForCausalLM') return LLAMA3;
  if (arch === 'MistralForCausalLM') return MISTRAL;
  return CHATML;
}

/** A byte-level BPE tokenizer.json: 256 byte tokens, a few merges, then the family's special tokens. */
function tokenizerFiles(fam: Family): { tokenizer: object; config: object; ids: Map<string, number> } {
  const bytes = bytesToUnicode();
  const vocab: Record<string, number> = {};
  bytes.forEach((ch, b) => (vocab[ch] = b));
  let next = 256;
  for (const merge of MERGES) vocab[merge.replace(' ', '')] = next++;
  const ids = new Map<string, number>();
  const added = fam.specials.map((content) => {
    const id = next++;
    vocab[content] = id;
    ids.set(content, id);
    return { id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true };
  });
  const byteLevel = { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true };
  const postProcessor =
    fam.bos === null
      ? { ...byteLevel, trim_offsets: false, use_regex: false }
      : {
          type: 'TemplateProcessing',
          single: [{ SpecialToken: { id: fam.bos, type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }],
          pair: [
            { SpecialToken: { id: fam.bos, type_id: 0 } },
            { Sequence: { id: 'A', type_id: 0 } },
            { SpecialToken: { id: fam.bos, type_id: 1 } },
            { Sequence: { id: 'B', type_id: 1 } },
          ],
          special_tokens: { [fam.bos]: { id: fam.bos, ids: [ids.get(fam.bos)!], tokens: [fam.bos] } },
        };
  const tokenizer = {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: added,
    normalizer: null,
    pre_tokenizer: byteLevel,
    post_processor: postProcessor,
    decoder: byteLevel,
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: false,
      vocab,
      merges: MERGES,
    },
  };
  const config = {
    tokenizer_class: 'PreTrainedTokenizerFast',
    bos_token: fam.bos,
    eos_token: fam.eos,
    clean_up_tokenization_spaces: false,
    model_max_length: 2048,
    chat_template: fam.chatTemplate,
    added_tokens_decoder: Object.fromEntries(added.map(({ id, ...rest }) => [String(id), rest])),
  };
  return { tokenizer, config, ids };
}

/** Seeded normal random numbers (mulberry32 + Box-Muller), so a seed always gives the same model. */
function normalRng(seed: number): () => number {
  const uniform = mulberry32(seed);
  return () => Math.sqrt(-2 * Math.log(1 - uniform())) * Math.cos(2 * Math.PI * uniform());
}

export interface TinyModel {
  dir: string;
  /** The config.json written. */
  config: Record<string, unknown>;
  /** Special token ids by content. */
  specialTokens: Map<string, number>;
}

/** A tiny model's dimensions, defaults filled in. */
interface TinyDims {
  hidden: number;
  inter: number;
  layers: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  vocab: number;
  tied: boolean;
}

/** Writes a random-weight model directory (config.json, safetensors, tokenizer files) and returns its config. */
export async function makeTinyModel(dir: string, options: TinyModelOptions): Promise<TinyModel> {
  const arch = options.architecture;
  const dtype = DTYPES[options.dtype ?? 'fp32'];
  const hidden = options.hiddenSize ?? 64;
  const heads = options.heads ?? 4;
  const d: TinyDims = {
    hidden,
    inter: options.intermediateSize ?? 128,
    layers: options.layers ?? 2,
    heads,
    kvHeads: options.kvHeads ?? 2,
    headDim: options.headDim ?? (arch === 'Qwen3ForCausalLM' ? (2 * hidden) / heads : hidden / heads),
    vocab: options.vocabSize ?? 320,
    tied: options.tieWordEmbeddings ?? (arch === 'LlamaForCausalLM' || arch.startsWith('Qwen')),
  };
  const fam = family(arch);
  const tok = tokenizerFiles(fam);
  if (Math.max(...tok.ids.values()) >= d.vocab) throw new Error(`vocabSize ${d.vocab} is smaller than the tokenizer`);
  const config = tinyConfig(arch, d, dtype.torch, {
    bos: tok.ids.get(fam.bos ?? '<|endoftext|>') ?? null,
    eos: tok.ids.get(fam.eos)!,
    slidingWindow: options.slidingWindow,
  });
  const tensors = tinyTensors(arch, d, dtype.safetensors, options.seed ?? 1);
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, 'config.json'), `${JSON.stringify(config, null, 2)}\n`);
  await writeFile(join(dir, 'tokenizer.json'), JSON.stringify(tok.tokenizer));
  await writeFile(join(dir, 'tokenizer_config.json'), `${JSON.stringify(tok.config, null, 2)}\n`);
  await writeWeights(dir, tensors, options.shards ?? 1);
  return { dir, config, specialTokens: tok.ids };
}

/** The architecture's HF config.json for dimensions `d`. */
function tinyConfig(
  arch: Architecture,
  d: TinyDims,
  torchDtype: string,
  t: { bos: number | null; eos: number; slidingWindow: number | null | undefined },
): Record<string, unknown> {
  const { hidden, inter, layers, heads, kvHeads, headDim, vocab, tied } = d;
  const base: Record<string, unknown> = {
    architectures: [arch],
    vocab_size: vocab,
    hidden_size: hidden,
    intermediate_size: inter,
    num_hidden_layers: layers,
    num_attention_heads: heads,
    num_key_value_heads: kvHeads,
    hidden_act: 'silu',
    max_position_embeddings: 2048,
    initializer_range: 0.02,
    rms_norm_eps: 1e-6,
    use_cache: true,
    tie_word_embeddings: tied,
    attention_dropout: 0.0,
    bos_token_id: t.bos,
    eos_token_id: t.eos,
    torch_dtype: torchDtype,
  };
  if (arch === 'LlamaForCausalLM') {
    // original_max_position_embeddings is shrunk with the model so the tiny head_dim still has high, medium and
    // low frequency bands for llama3 scaling to treat differently.
    return {
      ...base,
      model_type: 'llama',
      head_dim: headDim,
      rope_theta: 500000.0,
      rope_scaling: {
        rope_type: 'llama3',
        factor: 8.0,
        low_freq_factor: 1.0,
        high_freq_factor: 4.0,
        original_max_position_embeddings: 256,
      },
      attention_bias: false,
      mlp_bias: false,
      pretraining_tp: 1,
      rms_norm_eps: 1e-5,
    };
  } else if (arch === 'MistralForCausalLM') {
    return {
      ...base,
      model_type: 'mistral',
      head_dim: headDim,
      rope_theta: 10000.0,
      sliding_window: t.slidingWindow === undefined ? 32 : t.slidingWindow,
    };
  } else if (arch === 'Qwen2ForCausalLM') {
    if (headDim !== hidden / heads) throw new Error('Qwen2 derives head_dim from hidden_size / num_attention_heads');
    return {
      ...base,
      model_type: 'qwen2',
      rope_theta: 1000000.0,
      use_sliding_window: false,
      sliding_window: null,
      max_window_layers: layers,
    };
  } else {
    return {
      ...base,
      model_type: 'qwen3',
      head_dim: headDim,
      rope_theta: 1000000.0,
      attention_bias: false,
      use_sliding_window: false,
      sliding_window: null,
      max_window_layers: layers,
    };
  }
}

/** Random weights for dimensions `d`, in HF's tensor names and order. */
function tinyTensors(arch: Architecture, d: TinyDims, dtype: SafetensorsDtype, seed: number): TensorToWrite[] {
  const { hidden, inter, layers, heads, kvHeads, headDim, vocab, tied } = d;
  const randn = normalRng(seed);
  const tensors: TensorToWrite[] = [];
  const add = (name: string, shape: number[], std: number, mean = 0): void => {
    const data = new Float32Array(shape.reduce((a, b) => a * b, 1));
    for (let i = 0; i < data.length; i++) data[i] = mean + std * randn();
    tensors.push({ name, dtype, shape, data });
  };
  // Scales keep activations O(1): projections ~ 1/sqrt(fan_in) so each layer neither explodes nor vanishes; norms
  // near 1 but not exactly, so a missing or misplaced norm shows up in the logits.
  const proj = (fanIn: number): number => 1 / Math.sqrt(fanIn);
  add('model.embed_tokens.weight', [vocab, hidden], 0.5);
  for (let l = 0; l < layers; l++) {
    const p = `model.layers.${l}.`;
    add(`${p}input_layernorm.weight`, [hidden], 0.1, 1);
    add(`${p}self_attn.q_proj.weight`, [heads * headDim, hidden], proj(hidden));
    add(`${p}self_attn.k_proj.weight`, [kvHeads * headDim, hidden], proj(hidden));
    add(`${p}self_attn.v_proj.weight`, [kvHeads * headDim, hidden], proj(hidden));
    add(`${p}self_attn.o_proj.weight`, [hidden, heads * headDim], proj(heads * headDim));
    if (arch === 'Qwen2ForCausalLM') {
      add(`${p}self_attn.q_proj.bias`, [heads * headDim], 0.1);
      add(`${p}self_attn.k_proj.bias`, [kvHeads * headDim], 0.1);
      add(`${p}self_attn.v_proj.bias`, [kvHeads * headDim], 0.1);
    }
    if (arch === 'Qwen3ForCausalLM') {
      add(`${p}self_attn.q_norm.weight`, [headDim], 0.1, 1);
      add(`${p}self_attn.k_norm.weight`, [headDim], 0.1, 1);
    }
    add(`${p}post_attention_layernorm.weight`, [hidden], 0.1, 1);
    add(`${p}mlp.gate_proj.weight`, [inter, hidden], proj(hidden));
    add(`${p}mlp.up_proj.weight`, [inter, hidden], proj(hidden));
    add(`${p}mlp.down_proj.weight`, [hidden, inter], proj(inter));
  }
  add('model.norm.weight', [hidden], 0.1, 1);
  if (!tied) add('lm_head.weight', [vocab, hidden], proj(hidden) * 4);

  return tensors;
}

/** model.safetensors, or `shards` files and their index. */
async function writeWeights(dir: string, tensors: TensorToWrite[], shards: number): Promise<void> {
  if (shards <= 1) {
    await writeSafetensors(join(dir, 'model.safetensors'), tensors);
  } else {
    const weightMap: Record<string, string> = {};
    let totalSize = 0;
    const pad = (i: number): string => String(i).padStart(5, '0');
    for (let s = 0; s < shards; s++) {
      const file = `model-${pad(s + 1)}-of-${pad(shards)}.safetensors`;
      const part = tensors.filter((_, i) => i % shards === s);
      for (const t of part) weightMap[t.name] = file;
      totalSize += await writeSafetensors(join(dir, file), part);
    }
    const index = { metadata: { total_size: totalSize }, weight_map: weightMap };
    await writeFile(join(dir, 'model.safetensors.index.json'), `${JSON.stringify(index, null, 2)}\n`);
  }
}

async function main(argv: string[]): Promise<void> {
  const program = new Command()
    .name('make-tiny-models')
    .argument('<outDir>', 'directory that receives one model directory per architecture')
    .addOption(
      new Option('--arch <arch>', 'architecture')
        .choices([...Object.keys(TINY_ARCHITECTURES), ...Object.values(TINY_ARCHITECTURES), 'all'])
        .default('all'),
    )
    .addOption(new Option('--dtype <dtype>', 'weight dtype').choices(Object.keys(DTYPES)).default('fp32'))
    .option('--shards <n>', 'number of safetensors shards', (v) => Number.parseInt(v, 10), 1)
    .option('--seed <n>', 'random seed', (v) => Number.parseInt(v, 10), 1)
    .parse(argv);
  const opts = program.opts<{ arch: string; dtype: TinyDtype; shards: number; seed: number }>();
  const names = opts.arch === 'all' ? Object.keys(TINY_ARCHITECTURES) : [opts.arch];
  for (const name of names) {
    const dir = resolve(program.args[0]!, name);
    const architecture = TINY_ARCHITECTURES[name] ?? (name as Architecture);
    await makeTinyModel(dir, { architecture, dtype: opts.dtype, shards: opts.shards, seed: opts.seed });
    process.stdout.write(`${dir}\n`);
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) await main(process.argv);
