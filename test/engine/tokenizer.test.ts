import { expect } from 'chai';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { KdnError } from '../../common/errors.ts';
import { loadModelConfig } from '../../engine-adapter/model/load-config.ts';
import { TextStream } from '../../engine-adapter/model/text-stream.ts';
import { loadTokenizer } from '../../engine-adapter/model/tokenizer.ts';
import { TempModels } from './temp-models.ts';

describe('engine tokenizer', () => {
  const models = new TempModels();
  after(() => models.cleanup());

  const text = 'Hello there, the world! héllo 你好 🙂 tabs\tand\nnewlines';

  it('round-trips text (multi-byte included) through byte-level BPE, adding BOS only when asked', async () => {
    const m = await models.make({ architecture: 'LlamaForCausalLM' });
    const tok = await loadTokenizer(m.dir, await loadModelConfig(m.dir));
    const bos = m.specialTokens.get('<|begin_of_text|>')!;
    const ids = tok.encode(text);
    expect(ids[0]).to.equal(bos);
    expect(ids.length).to.be.lessThan(Buffer.byteLength(text) + 1); // merges shortened it
    expect(tok.decode(ids, { skipSpecialTokens: true })).to.equal(text);
    expect(tok.decode(ids)).to.equal(`<|begin_of_text|>${text}`);
    expect(tok.encode(text, { addSpecialTokens: false })).to.deep.equal(ids.slice(1));
    expect(tok.bosTokenId).to.equal(bos);
    expect(tok.eosTokenIds).to.include(m.specialTokens.get('<|eot_id|>'));
    // special tokens in text are single tokens
    expect(tok.encode('<|eot_id|>', { addSpecialTokens: false })).to.deep.equal([m.specialTokens.get('<|eot_id|>')]);
  });

  it('renders the Llama 3 chat template with the generation prompt', async () => {
    const m = await models.make({ architecture: 'LlamaForCausalLM' });
    const tok = await loadTokenizer(m.dir);
    const rendered = tok.applyChatTemplate([
      { role: 'system', content: 'Be brief.' },
      { role: 'user', content: 'Hi' },
    ]);
    expect(rendered).to.equal(
      '<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>' +
        '<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n',
    );
  });

  it('renders ChatML for Qwen and takes the eos from tokenizer_config.json', async () => {
    const m = await models.make({ architecture: 'Qwen3ForCausalLM' });
    const tok = await loadTokenizer(m.dir, await loadModelConfig(m.dir));
    expect(tok.applyChatTemplate([{ role: 'user', content: 'Hi' }])).to.equal('<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n');
    expect(tok.eosTokenIds).to.deep.equal([m.specialTokens.get('<|im_end|>')]);
    expect(tok.encode('Hi')).to.deep.equal(tok.encode('Hi', { addSpecialTokens: false }));
    expect(tok.bosTokenId).to.equal(undefined); // bos_token is null for Qwen, whatever config.json says
  });

  it('a model without a chat template says so', async () => {
    const m = await models.make({ architecture: 'MistralForCausalLM' });
    const path = join(m.dir, 'tokenizer_config.json');
    const cfg = JSON.parse(await readFile(path, 'utf8')) as Record<string, unknown>;
    delete cfg.chat_template;
    await writeFile(path, JSON.stringify(cfg));
    const tok = await loadTokenizer(m.dir);
    expect(() => tok.applyChatTemplate([{ role: 'user', content: 'x' }])).to.throw(KdnError, /chat template/);
  });

  it('a missing tokenizer.json is MODEL_INVALID naming it', async () => {
    try {
      await loadTokenizer(join(await models.dir(), 'nope'));
      expect.fail('loaded');
    } catch (err) {
      expect((err as KdnError).code).to.equal('MODEL_INVALID');
      expect((err as KdnError).message).to.contain('tokenizer.json');
    }
  });

  it('the text stream emits only complete characters and adds up to the full decode', async () => {
    const m = await models.make({ architecture: 'Qwen2ForCausalLM' });
    const tok = await loadTokenizer(m.dir);
    const ids = tok.encode(text);
    const stream = new TextStream(tok);
    const pieces = ids.map((id) => stream.push(id));
    expect(pieces.join('')).to.equal(text);
    expect(stream.text).to.equal(text);
    expect(pieces.some((p) => p === '')).to.equal(true); // the 3- and 4-byte characters span tokens
    expect(pieces.every((p) => !p.includes('\uFFFD'))).to.equal(true);
    const cut = new TextStream(tok);
    const emoji = tok.encode('🙂', { addSpecialTokens: false });
    expect(emoji.length).to.be.greaterThan(1);
    expect(cut.push(emoji[0]!)).to.equal('');
    expect(cut.flush()).to.equal('\uFFFD');
  });
});
