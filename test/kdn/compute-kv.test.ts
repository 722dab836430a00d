import { Readable } from 'node:stream';
import { expect } from 'chai';
import { createEngine } from '../../engine-adapter/index.ts';
import type { Engine } from '../../engine-adapter/types.ts';
import { chunkTokens } from '../../kdn/ingest/chunker.ts';
import { computeChainedKV, computeIndependentKV, type KVSink } from '../../kdn/ingest/compute-kv.ts';
import { planKeys } from '../../kdn/ingest/ingest-document.ts';
import { sinkToken } from '../../kdn/sink-token.ts';
import { codecFromString, encodeKVObject, readKVObject } from '../../storage/kv-object/index.ts';
import type { KVTensors } from '../../storage/kv-object/types.ts';
import { testModel, type TestModel } from './support/tiny-model.ts';

const TEXT = 'Cats hunt mice at night.\n\nLions live in Africa and hunt in prides.\n\nA lighthouse warns ships of rocks.';

/**
 * The chunk objects ingest computes, injected in order after the sink token, must reproduce a from-scratch
 * prefill of the same tokens: compared on the logits of the question, which a wrong range or position would move.
 */
describe('kdn/ingest/compute-kv', () => {
  let model: TestModel;
  let engine: Engine;
  const fp16 = codecFromString('fp16');

  before(async () => {
    model = await testModel({ preferShipped: false });
    engine = await createEngine({ modelDir: model.dir, backend: 'cpu' });
  });
  after(async () => {
    await engine?.dispose();
    await model?.cleanup();
  });

  async function computeAll(): Promise<{ plans: ReturnType<typeof planKeys>; objects: Map<string, Buffer>; question: number[] }> {
    const ids = engine.tokenizer.encode(TEXT, { addSpecialTokens: false });
    const chunks = chunkTokens(engine.tokenizer, ids, 16);
    const scope = { modelFingerprint: engine.info.fingerprint, codec: fp16, salt: '' };
    const plans = planKeys(
      scope,
      chunks.map((c) => c.tokenIds),
      engine.info.maxPositionEmbeddings,
    );
    const objects = new Map<string, Buffer>();
    const pending = new Set(plans.flatMap((p) => [p.independentKey, p.chainedKey!]));
    const sink: KVSink = {
      pending,
      save: async (key: string, tensors: KVTensors, tokenIds: number[]) => {
        objects.set(key, encodeKVObject(tensors, { modelFingerprint: engine.info.fingerprint, tokenIds, codec: fp16 }));
        pending.delete(key);
      },
    };
    await computeChainedKV(engine, plans, sink);
    await computeIndependentKV(engine, plans, sink);
    expect(pending.size).to.equal(0);
    return { plans, objects, question: engine.tokenizer.encode('\n\nQuestion: who hunts?\nAnswer:', { addSpecialTokens: false }) };
  }

  async function injected(keys: string[], objects: Map<string, Buffer>, question: number[]): Promise<Float32Array> {
    const session = engine.createSession();
    try {
      await session.prefill([sinkToken(engine)], { logits: 'none' });
      for (const key of keys) await session.injectKV(await readKVObject(Readable.from([objects.get(key)!])), session.length);
      return await session.prefill(question);
    } finally {
      session.dispose();
    }
  }

  async function recomputed(tokens: number[]): Promise<Float32Array> {
    const session = engine.createSession();
    try {
      return await session.prefill([sinkToken(engine), ...tokens]);
    } finally {
      session.dispose();
    }
  }

  const maxDiff = (a: Float32Array, b: Float32Array): number => a.reduce((m, v, i) => Math.max(m, Math.abs(v - b[i]!)), 0);
  const argmax = (a: Float32Array): number => a.reduce((best, v, i) => (v > a[best]! ? i : best), 0);

  it('prefix-chained objects injected in order reproduce a from-scratch prefill', async () => {
    const { plans, objects, question } = await computeAll();
    expect(plans.length).to.be.greaterThan(2);
    const all = plans.flatMap((p) => p.tokenIds);
    const reference = await recomputed([...all, ...question]);
    const chained = await injected(
      plans.map((p) => p.chainedKey!),
      objects,
      question,
    );
    const scale = maxDiff(reference, new Float32Array(reference.length));
    const diff = maxDiff(chained, reference);
    console.log(`      ${plans.length} chained fp16 objects: max |logit diff| ${diff.toExponential(2)} (logit scale ${scale.toFixed(3)})`);
    expect(diff).to.be.below(scale * 1e-2);
    expect(argmax(chained)).to.equal(argmax(reference));

    // The same chunks in another order are a different context: the check is sensitive to placement.
    const swapped = [plans[1]!.chainedKey!, plans[0]!.chainedKey!, ...plans.slice(2).map((p) => p.chainedKey!)];
    expect(maxDiff(await injected(swapped, objects, question), reference)).to.be.above(diff * 10);
  });

  it("an independent object is the chain's first object, and alone after the sink it is exact for its own tokens", async () => {
    const { plans, objects, question } = await computeAll();
    expect(plans[0]!.chainedKey).to.equal(plans[0]!.independentKey);
    const last = plans.at(-1)!;
    const alone = await injected([last.independentKey], objects, question);
    const reference = await recomputed([...last.tokenIds, ...question]);
    expect(maxDiff(alone, reference)).to.be.below(maxDiff(reference, new Float32Array(reference.length)) * 1e-2);
  });
});
