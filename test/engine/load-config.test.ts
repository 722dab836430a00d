import { expect } from 'chai';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { KdnError } from '../../common/errors.ts';
import { loadModelConfig, parseModelConfig } from '../../engine-adapter/model/load-config.ts';
import { TempModels } from './temp-models.ts';
import { rejection } from '../support/rejection.ts';

function thrown(fn: () => unknown): KdnError {
  try {
    fn();
  } catch (err) {
    expect(err).to.be.instanceOf(KdnError);
    return err as KdnError;
  }
  throw new Error('expected a throw');
}

describe('engine model config', () => {
  const models = new TempModels();
  after(() => models.cleanup());

  it('parses Llama with llama3 rope scaling and tied embeddings', async () => {
    const m = await models.make({ architecture: 'LlamaForCausalLM' });
    const c = await loadModelConfig(m.dir);
    expect(c).to.include({
      architecture: 'LlamaForCausalLM',
      hiddenSize: 64,
      layers: 2,
      heads: 4,
      kvHeads: 2,
      headDim: 16,
      ropeTheta: 500000,
    });
    expect(c).to.include({ tieWordEmbeddings: true, attentionBias: false, qkNorm: false, slidingWindow: null, rmsNormEps: 1e-5 });
    expect(c.ropeScaling).to.deep.equal({
      type: 'llama3',
      factor: 8,
      lowFreqFactor: 1,
      highFreqFactor: 4,
      originalMaxPositionEmbeddings: 256,
    });
    expect(c.bosTokenId).to.equal(m.specialTokens.get('<|begin_of_text|>'));
    expect(c.eosTokenIds).to.deep.equal([m.specialTokens.get('<|eot_id|>')]);
  });

  it('parses Mistral with its sliding window and untied lm_head', async () => {
    const c = await loadModelConfig((await models.make({ architecture: 'MistralForCausalLM' })).dir);
    expect(c).to.include({
      architecture: 'MistralForCausalLM',
      slidingWindow: 32,
      tieWordEmbeddings: false,
      ropeScaling: null,
      ropeTheta: 10000,
    });
  });

  it('parses Qwen2 with q/k/v biases and head_dim derived from hidden size', async () => {
    const c = await loadModelConfig((await models.make({ architecture: 'Qwen2ForCausalLM' })).dir);
    expect(c).to.include({
      architecture: 'Qwen2ForCausalLM',
      attentionBias: true,
      qkNorm: false,
      headDim: 16,
      slidingWindow: null,
      ropeTheta: 1e6,
    });
  });

  it('parses Qwen3 with q/k norms and an explicit head_dim', async () => {
    const c = await loadModelConfig((await models.make({ architecture: 'Qwen3ForCausalLM' })).dir);
    expect(c).to.include({ architecture: 'Qwen3ForCausalLM', qkNorm: true, attentionBias: false, headDim: 32, hiddenSize: 64, heads: 4 });
  });

  const base = {
    architectures: ['LlamaForCausalLM'],
    vocab_size: 10,
    hidden_size: 8,
    intermediate_size: 16,
    num_hidden_layers: 1,
    num_attention_heads: 2,
    rms_norm_eps: 1e-5,
    max_position_embeddings: 64,
  };

  it('fills transformers defaults and reads transformers 5 rope_parameters', () => {
    const c = parseModelConfig(base, 'config.json');
    expect(c).to.include({ kvHeads: 2, headDim: 4, ropeTheta: 10000, tieWordEmbeddings: false });
    const v5 = parseModelConfig(
      {
        ...base,
        rope_parameters: {
          rope_type: 'llama3',
          rope_theta: 5e5,
          factor: 32,
          low_freq_factor: 1,
          high_freq_factor: 4,
          original_max_position_embeddings: 8192,
        },
      },
      'config.json',
    );
    expect(v5.ropeTheta).to.equal(5e5);
    expect(v5.ropeScaling?.factor).to.equal(32);
  });

  it('merges eos ids from generation_config.json', () => {
    const c = parseModelConfig({ ...base, eos_token_id: 3 }, 'config.json', { eos_token_id: [3, 7] });
    expect(c.eosTokenIds).to.deep.equal([3, 7]);
  });

  it('rejects an unsupported architecture or rope type naming it', () => {
    const arch = thrown(() => parseModelConfig({ ...base, architectures: ['GPT2LMHeadModel'] }, 'x/config.json'));
    expect(arch.code).to.equal('MODEL_UNSUPPORTED');
    expect(arch.message).to.contain('GPT2LMHeadModel');
    const rope = thrown(() => parseModelConfig({ ...base, rope_scaling: { rope_type: 'yarn', factor: 4 } }, 'config.json'));
    expect(rope.code).to.equal('MODEL_UNSUPPORTED');
    expect(rope.message).to.contain('yarn');
    expect(thrown(() => parseModelConfig({ ...base, hidden_act: 'gelu' }, 'config.json')).code).to.equal('MODEL_UNSUPPORTED');
  });

  it('rejects malformed values as MODEL_INVALID naming the field', () => {
    const e = thrown(() => parseModelConfig({ ...base, hidden_size: -1 }, 'config.json'));
    expect(e.code).to.equal('MODEL_INVALID');
    expect(e.message).to.contain('hidden_size');
    expect(thrown(() => parseModelConfig({ ...base, num_key_value_heads: 3 }, 'config.json')).code).to.equal('MODEL_INVALID');
    expect(thrown(() => parseModelConfig([], 'config.json')).code).to.equal('MODEL_INVALID');
  });

  it('a missing or unparsable config.json is MODEL_INVALID naming the path', async () => {
    const dir = await models.dir();
    const missing = await rejection(loadModelConfig(join(dir, 'nowhere')));
    expect(missing.code).to.equal('MODEL_INVALID');
    expect(missing.message).to.contain(join(dir, 'nowhere', 'config.json'));
    const m = await models.make({ architecture: 'LlamaForCausalLM' });
    const text = await readFile(join(m.dir, 'config.json'), 'utf8');
    await writeFile(join(m.dir, 'config.json'), text.slice(0, 20));
    const broken = await rejection(loadModelConfig(m.dir));
    expect(broken.code).to.equal('MODEL_INVALID');
    expect(broken.message).to.contain('config.json');
  });
});
