import { expect } from 'chai';
import { loadModelConfig, loadTokenizer } from '../../engine-adapter/index.ts';
import { chunkTokens } from '../../kdn/ingest/chunker.ts';
import { DocumentTokenizer } from '../../kdn/ingest/document-tokenizer.ts';
import { corpusText } from '../faults/support/corpus.ts';
import { testModel, type TestModel } from './support/tiny-model.ts';

/** Ingest tokenizes on a worker thread: it must cut exactly the chunks the engine's tokenizer gives in this thread. */
describe('kdn/ingest DocumentTokenizer (worker thread)', function () {
  this.timeout(60_000);
  let model: TestModel;
  let tokenizer: DocumentTokenizer;

  before(async () => {
    model = await testModel();
    tokenizer = new DocumentTokenizer(model.dir);
  });

  after(async () => {
    await tokenizer?.close();
    await model?.cleanup();
  });

  it('gives the same tokens and chunks as tokenizing on this thread, for several documents at once', async () => {
    const local = await loadTokenizer(model.dir, await loadModelConfig(model.dir));
    const texts = [corpusText(80, 1), `# Title\n\n${corpusText(40, 2)}\n\n${corpusText(40, 3)}`, 'Ünïcödé — “quotes” and emoji 🐈 end.'];
    const results = await Promise.all(texts.map((text) => tokenizer.tokenize(text, 32)));
    for (const [i, text] of texts.entries()) {
      const ids = local.encode(text, { addSpecialTokens: false });
      expect(results[i]!.tokenIds).to.deep.equal(ids);
      expect(results[i]!.chunks).to.deep.equal(chunkTokens(local, ids, 32));
    }
  });

  it('refuses work once closed', async () => {
    const closed = new DocumentTokenizer(model.dir);
    await closed.close();
    const err = await closed.tokenize('text', 8).then(() => undefined, (e: unknown) => e);
    expect(err).to.have.property('code', 'ENGINE_UNAVAILABLE');
  });
});
