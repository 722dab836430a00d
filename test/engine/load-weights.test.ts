import { expect } from 'chai';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fingerprintModel } from '../../engine-adapter/model/fingerprint.ts';
import { loadModelWeights } from '../../engine-adapter/model/load-weights.ts';
import { readModelInfo } from '../../engine-adapter/model/model-info.ts';
import { SafetensorsModel, type TensorEntry } from '../../engine-adapter/model/safetensors.ts';
import { writeSafetensors, type TensorToWrite } from '../../engine-adapter/model/safetensors-write.ts';
import { ARCHITECTURES, TempModels } from './temp-models.ts';
import { rejection } from '../support/rejection.ts';

/** Rewrites a single-file model's tensors through `edit`. */
async function rewriteTensors(dir: string, edit: (tensors: TensorToWrite[]) => TensorToWrite[]): Promise<void> {
  const files = await SafetensorsModel.open(dir);
  const tensors: TensorToWrite[] = [];
  for (const name of files.names()) {
    const e: TensorEntry = files.entry(name)!;
    tensors.push({ name, dtype: e.dtype, shape: e.shape, data: await files.readFloat32(e) });
  }
  await files.close();
  await writeSafetensors(join(dir, 'model.safetensors'), edit(tensors));
}

describe('engine model weights and fingerprint', () => {
  const models = new TempModels();
  after(() => models.cleanup());

  for (const architecture of ARCHITECTURES) {
    it(`loads ${architecture} into float32 tensors of HF shapes, counting parameters like model-info`, async () => {
      const m = await models.make({ architecture, dtype: 'fp16' });
      const { weights, parameters, fingerprint } = await loadModelWeights(m.dir);
      const c = weights.config;
      expect(weights.layers).to.have.length(c.layers);
      const l0 = weights.layers[0]!;
      expect(l0.q.shape).to.deep.equal([c.heads * c.headDim, c.hiddenSize]);
      expect(l0.k.shape).to.deep.equal([c.kvHeads * c.headDim, c.hiddenSize]);
      expect(l0.o.shape).to.deep.equal([c.hiddenSize, c.heads * c.headDim]);
      expect(l0.down.shape).to.deep.equal([c.hiddenSize, c.intermediateSize]);
      expect(l0.qBias !== undefined).to.equal(architecture === 'Qwen2ForCausalLM');
      expect(l0.qNorm?.shape).to.deep.equal(architecture === 'Qwen3ForCausalLM' ? [c.headDim] : undefined);
      expect(weights.lmHead === weights.embed).to.equal(c.tieWordEmbeddings);
      expect(l0.q.data.length).to.equal(c.heads * c.headDim * c.hiddenSize);
      const info = await readModelInfo(m.dir);
      expect(info.parameters).to.equal(parameters);
      expect(info.fingerprint).to.equal(fingerprint);
      expect(info.kvBytesPerToken).to.equal(2 * c.layers * c.kvHeads * c.headDim * 2);
    });
  }

  it('a missing tensor is MODEL_INVALID naming it; a wrong shape names tensor and shapes', async () => {
    const m = await models.make({ architecture: 'MistralForCausalLM' });
    await rewriteTensors(m.dir, (ts) => ts.filter((t) => t.name !== 'model.layers.1.mlp.up_proj.weight'));
    const missing = await rejection(loadModelWeights(m.dir));
    expect(missing.code).to.equal('MODEL_INVALID');
    expect(missing.message).to.contain('model.layers.1.mlp.up_proj.weight');

    const n = await models.make({ architecture: 'MistralForCausalLM' });
    await rewriteTensors(n.dir, (ts) => ts.map((t) => (t.name === 'model.norm.weight' ? { ...t, shape: [32, 2] } : t)));
    const shape = await rejection(loadModelWeights(n.dir));
    expect(shape.code).to.equal('MODEL_INVALID');
    expect(shape.message).to.contain('model.norm.weight').and.contain('[32,2]');
  });

  it('an untied model without lm_head.weight is MODEL_INVALID', async () => {
    const m = await models.make({ architecture: 'MistralForCausalLM' });
    await rewriteTensors(m.dir, (ts) => ts.filter((t) => t.name !== 'lm_head.weight'));
    expect((await rejection(loadModelWeights(m.dir))).message).to.contain('lm_head.weight');
  });

  it('the fingerprint is stable, ignores sharding, and changes with one weight, a dtype or the config', async () => {
    const a = await models.make({ architecture: 'LlamaForCausalLM', seed: 9 });
    const b = await models.make({ architecture: 'LlamaForCausalLM', seed: 9, shards: 2 });
    const base = await fingerprintModel(a.dir);
    expect(base).to.match(/^[0-9a-f]{64}$/);
    expect(await fingerprintModel(a.dir)).to.equal(base);
    expect(await fingerprintModel(b.dir)).to.equal(base);

    const oneWeight = await models.make({ architecture: 'LlamaForCausalLM', seed: 9 });
    await rewriteTensors(oneWeight.dir, (ts) =>
      ts.map((t) => {
        if (t.name !== 'model.layers.1.mlp.down_proj.weight') return t;
        const data = t.data.slice();
        data[17] = data[17]! + 1e-3;
        return { ...t, data };
      }),
    );
    expect(await fingerprintModel(oneWeight.dir)).to.not.equal(base);

    const bf16 = await models.make({ architecture: 'LlamaForCausalLM', seed: 9, dtype: 'bf16' });
    expect(await fingerprintModel(bf16.dir)).to.not.equal(base);

    const config = await models.make({ architecture: 'LlamaForCausalLM', seed: 9 });
    const path = join(config.dir, 'config.json');
    const json = JSON.parse(await readFile(path, 'utf8')) as Record<string, unknown>;
    await writeFile(path, JSON.stringify({ ...json, rope_theta: 10000 }));
    expect(await fingerprintModel(config.dir)).to.not.equal(base);
    // eos ids do not change any KV, so they do not change the fingerprint
    await writeFile(path, JSON.stringify({ ...json, eos_token_id: [1, 2] }));
    expect(await fingerprintModel(config.dir)).to.equal(base);
  });
});
