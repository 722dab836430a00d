import { expect } from 'chai';
import { kvBeforeRope, loadModelConfig, loadTokenizer } from '../../engine-adapter/index.ts';
import { chunkTokens } from '../../kdn/ingest/chunker.ts';
import { IngestThread } from '../../kdn/ingest/ingest-thread.ts';
import { codecFromString, encodeKVObject, fitTransformTable, transformTables } from '../../storage/kv-object/index.ts';
import { corpusText } from '../faults/support/corpus.ts';
import { kvTensors } from '../../fixtures/kv-data.ts';
import { testModel, type TestModel } from './support/tiny-model.ts';

/**
 * Ingest tokenizes and encodes on a worker thread: it must cut exactly the chunks the engine's tokenizer gives in
 * this thread, and write byte for byte the objects encodeKVObject writes here.
 */
describe('kdn/ingest IngestThread (worker thread)', function () {
  this.timeout(60_000);
  let model: TestModel;
  let thread: IngestThread;

  before(async () => {
    model = await testModel();
    thread = new IngestThread(model.dir);
  });

  after(async () => {
    await thread?.close();
    await model?.cleanup();
  });

  it('gives the same tokens and chunks as tokenizing on this thread, for several documents at once', async () => {
    const local = await loadTokenizer(model.dir, await loadModelConfig(model.dir));
    const texts = [corpusText(80, 1), `# Title\n\n${corpusText(40, 2)}\n\n${corpusText(40, 3)}`, 'Ünïcödé — “quotes” and emoji 🐈 end.'];
    const results = await Promise.all(texts.map((text) => thread.tokenize(text, 32)));
    for (const [i, text] of texts.entries()) {
      const ids = local.encode(text, { addSpecialTokens: false });
      expect(results[i]!.tokenIds).to.deep.equal(ids);
      expect(results[i]!.chunks).to.deep.equal(chunkTokens(local, ids, 32));
    }
  });

  it('encodes KV objects byte for byte as on this thread, for every codec, and passes encoding errors back', async () => {
    const shape = { layers: 3, kvHeads: 2, headDim: 32, tokens: 20 };
    const tokenIds = Array.from({ length: 20 }, (_, i) => 100 + i);
    for (const name of ['fp16', 'int8+lz4', 'int4']) {
      const meta = { modelFingerprint: 'thread-test', tokenIds, codec: codecFromString(name) };
      const expected = encodeKVObject(kvTensors(shape, 4), meta);
      const got = await thread.encode(kvTensors(shape, 4), meta);
      expect(Buffer.compare(got, expected), name).to.equal(0);
    }
    const err = await thread.encode(kvTensors(shape, 4), { modelFingerprint: 'x', tokenIds: [1], codec: codecFromString('fp16') }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).to.have.property('code', 'INVALID_ARGUMENT');
  });

  it('encodes transform objects as here: the table goes to the thread first, keys are unrotated there', async () => {
    const config = await loadModelConfig(model.dir);
    const shape = { layers: config.layers, kvHeads: config.kvHeads, headDim: config.headDim, tokens: 9 };
    const table = transformTables.register(
      fitTransformTable([{ ...kvTensors({ ...shape, tokens: 64 }, 6), ropeApplied: false }], 'thread-test'),
    );
    const meta = {
      modelFingerprint: 'thread-test',
      tokenIds: Array.from({ length: 9 }, (_, i) => i),
      codec: { name: 'transform' as const, lz4: false, table: table.hash, level: 1 },
    };
    const rotated = { ...kvTensors(shape, 7), positionBase: 40 };
    const expected = encodeKVObject(kvBeforeRope(rotated, config), meta);
    for (let i = 0; i < 2; i++) {
      const got = await thread.encode({ ...kvTensors(shape, 7), positionBase: 40 }, meta);
      expect(Buffer.compare(got, expected), `object ${i}`).to.equal(0);
    }
  });

  it('refuses work once closed', async () => {
    const closed = new IngestThread(model.dir);
    await closed.close();
    const err = await closed.tokenize('text', 8).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).to.have.property('code', 'ENGINE_UNAVAILABLE');
  });
});
