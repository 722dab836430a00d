import { expect } from 'chai';
import { loadTokenizer } from '../../engine-adapter/index.ts';
import type { Tokenizer } from '../../engine-adapter/types.ts';
import { chunkTokens } from '../../kdn/ingest/chunker.ts';
import { testModel, type TestModel } from './support/tiny-model.ts';

describe('kdn/ingest/chunker', () => {
  let model: TestModel;
  let tokenizer: Tokenizer;

  before(async () => {
    model = await testModel({ preferShipped: false });
    tokenizer = await loadTokenizer(model.dir);
  });
  after(() => model.cleanup());

  const encode = (text: string): number[] => tokenizer.encode(text, { addSpecialTokens: false });
  const paragraphs = [
    'Cats are small carnivorous mammals. They have lived with humans for thousands of years.',
    'The domestic cat sleeps for most of the day. Cats hunt mice and birds at night.',
    'Lions are big cats that live in Africa! They hunt in groups called prides? Yes.',
  ];
  const doc = paragraphs.join('\n\n');

  it('splits the token array so the chunks concatenate to exactly the document tokens, each within the budget', () => {
    const ids = encode(doc);
    for (const budget of [1, 7, 16, 40, 64, 1000]) {
      const chunks = chunkTokens(tokenizer, ids, budget);
      expect(
        chunks.flatMap((c) => c.tokenIds),
        `budget ${budget}`,
      ).to.deep.equal(ids);
      for (const [i, c] of chunks.entries()) {
        expect(c.index).to.equal(i);
        expect(c.tokenIds.length).to.be.within(1, budget);
        expect(c.start).to.equal(chunks.slice(0, i).reduce((n, p) => n + p.tokenIds.length, 0));
      }
    }
  });

  it('cuts at paragraph boundaries when a paragraph end fits in the budget', () => {
    const ids = encode(doc);
    const longest = Math.max(...paragraphs.map((p) => encode(`${p}\n\n`).length));
    const chunks = chunkTokens(tokenizer, ids, longest + 2);
    expect(chunks.map((c) => c.text.trim())).to.deep.equal(paragraphs);
  });

  it('falls back to sentence boundaries inside a long paragraph', () => {
    const text = paragraphs.join(' ');
    const longestSentence = Math.max(...text.split(/(?<=[.!?]) /).map((s) => encode(` ${s}`).length));
    const chunks = chunkTokens(tokenizer, encode(text), longestSentence + 2);
    expect(chunks.length).to.be.greaterThan(1);
    for (const c of chunks.slice(0, -1)) expect(c.text, JSON.stringify(c.text)).to.match(/[.!?]\s*$/);
  });

  it('cuts hard at the budget when there is no boundary', () => {
    const ids = encode('a'.repeat(300));
    const chunks = chunkTokens(tokenizer, ids, 50);
    expect(chunks.slice(0, -1).every((c) => c.tokenIds.length === 50)).to.equal(true);
    expect(chunks.flatMap((c) => c.tokenIds)).to.deep.equal(ids);
  });

  it('gives no chunks for an empty document and rejects a bad budget', () => {
    expect(chunkTokens(tokenizer, [], 10)).to.deep.equal([]);
    expect(() => chunkTokens(tokenizer, [1, 2], 0)).to.throw(RangeError);
  });
});
