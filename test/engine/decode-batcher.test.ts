/**
 * Continuous batching (engine-adapter/decode-batcher.ts) on the CPU backend, in-process and on the engine thread:
 * concurrent sessions decoding together give the very tokens each gives alone, while fewer forwards run than tokens
 * are generated; sequences join and leave at any step; the KV budget makes a sequence wait (and an abort ends the
 * wait); a sequence larger than the budget is refused.
 */
import { expect } from 'chai';
import { DecodeBatcher, type BatchingOptions } from '../../engine-adapter/decode-batcher.ts';
import { createCpuBackend } from '../../engine-adapter/cpu/cpu-backend.ts';
import { createEngine, createEngineInWorker, type Engine, type GenerateOptions } from '../../engine-adapter/index.ts';
import { loadModelWeights } from '../../engine-adapter/model/load-weights.ts';
import { loadTokenizer } from '../../engine-adapter/model/tokenizer.ts';
import { BackendSession } from '../../engine-adapter/session.ts';
import { testModel, type TestModel } from '../kdn/support/tiny-model.ts';
import { rejection } from '../support/rejection.ts';
import { directReader } from './kv-readers.ts';

const PROMPTS = [
  'The river carries water to the sea.',
  'A miller watches the ships at night, and the old bridge remembers the floods of many years.',
  'Why?',
  'Debian is a free operating system.',
  'In the beginning the harbour master counted the boats that came in with the tide, one by one.',
];
/** Different lengths, so sequences leave the batch at different steps. */
const MAX_TOKENS = [9, 4, 13, 1, 7];

interface Generated {
  tokens: number[];
  text: string;
}

async function generateOne(engine: Engine, prompt: string, options: GenerateOptions): Promise<Generated> {
  const session = engine.createSession({ capacity: 128 });
  try {
    await session.prefill([1, ...engine.tokenizer.encode(prompt, { addSpecialTokens: false })]);
    const { tokens, text } = await session.generate(options);
    return { tokens, text };
  } finally {
    session.dispose();
  }
}

/** Every prompt generated alone, one after another. */
async function sequentially(engine: Engine): Promise<Generated[]> {
  const out: Generated[] = [];
  for (const [i, p] of PROMPTS.entries()) out.push(await generateOne(engine, p, { maxTokens: MAX_TOKENS[i]!, ignoreEos: true }));
  return out;
}

/** Every prompt at once; the last two join while the others decode. */
async function concurrently(engine: Engine, options: Partial<GenerateOptions> = {}): Promise<Generated[]> {
  return Promise.all(
    PROMPTS.map(async (p, i) => {
      if (i >= 3) await new Promise((resolve) => setTimeout(resolve, 5 * i));
      return generateOne(engine, p, { maxTokens: MAX_TOKENS[i]!, ignoreEos: true, ...options });
    }),
  );
}

describe('continuous batching of concurrent sessions', function () {
  this.timeout(120_000);
  let model: TestModel;
  let plain: Engine;
  let expected: Generated[];

  before(async () => {
    model = await testModel();
    plain = await createEngine({ modelDir: model.dir, backend: 'cpu' });
    expected = await sequentially(plain);
  });

  after(async () => {
    await plain?.dispose();
    await model?.cleanup();
  });

  it('in-process: concurrent greedy and seeded sampling give each sequence the tokens it gets alone', async () => {
    const batched = await createEngine({ modelDir: model.dir, backend: 'cpu', batching: { maxSequences: 4 } });
    try {
      expect(await concurrently(batched)).to.deep.equal(expected);
      const sampled = { temperature: 0.9, topP: 0.95, seed: 5 };
      const alone: Generated[] = [];
      for (const [i, p] of PROMPTS.entries()) {
        alone.push(await generateOne(plain, p, { maxTokens: MAX_TOKENS[i]!, ignoreEos: true, ...sampled }));
      }
      expect(await concurrently(batched, sampled)).to.deep.equal(alone);
    } finally {
      await batched.dispose();
    }
  });

  it('on the engine thread: the same tokens', async () => {
    const remote = await createEngineInWorker({ modelDir: model.dir, backend: 'cpu', batching: { maxSequences: 8 } });
    try {
      expect(await concurrently(remote)).to.deep.equal(expected);
    } finally {
      await remote.dispose();
    }
  });

  it('runs fewer forwards than the tokens generated: sequences share steps', async () => {
    const { weights, fingerprint } = await loadModelWeights(model.dir);
    const tokenizer = await loadTokenizer(model.dir, weights.config);
    const backend = createCpuBackend(weights);
    const batcher = new DecodeBatcher(backend, { maxSequences: 8 });
    const sessions = PROMPTS.map(
      () => new BackendSession(backend, { config: weights.config, fingerprint, tokenizer }, 128, undefined, batcher),
    );
    const results = await Promise.all(
      sessions.map(async (s, i) => {
        await s.prefill([1, ...tokenizer.encode(PROMPTS[i]!, { addSpecialTokens: false })]);
        return s.generate({ maxTokens: MAX_TOKENS[i]!, ignoreEos: true });
      }),
    );
    results.forEach((r, i) => expect(r.tokens).to.deep.equal(expected[i]!.tokens));
    // Forwards: 5 prompts, then one per generated token (the session keeps each, the last one included).
    const forwards = PROMPTS.length + MAX_TOKENS.reduce((sum, n) => sum + n, 0);
    const { steps, sequences } = batcher.stats;
    expect(sequences).to.equal(forwards);
    expect(steps).to.be.at.most(1 + Math.max(...MAX_TOKENS));
    for (const s of sessions) s.dispose();
  });

  it('a KV budget for one sequence runs them one after another; an abort ends a wait; too large is refused', async () => {
    // Each sequence needs its prompt (about 10 tokens) plus 30 generated: 64 fits one, not two.
    const engine = await createEngine({ modelDir: model.dir, backend: 'cpu', batching: { maxSequences: 4, kvBudgetTokens: 64 } });
    try {
      const events: string[] = [];
      const run = (name: string, maxTokens: number, signal?: AbortSignal): Promise<string> =>
        (async () => {
          const session = engine.createSession({ capacity: 128 });
          await session.prefill([1, ...engine.tokenizer.encode(PROMPTS[0]!, { addSpecialTokens: false })]);
          const r = await session.generate({ maxTokens, ignoreEos: true, signal }, () => events.push(name));
          events.push(`${name} ${r.finishReason}`);
          session.dispose();
          return r.finishReason;
        })();
      const abort = new AbortController();
      const runs = [run('a', 30), run('b', 30), run('c', 30, abort.signal)];
      setTimeout(() => abort.abort(), 1);
      expect(await Promise.all(runs)).to.deep.equal(['length', 'length', 'aborted']);
      // c left while waiting; a's tokens all came before b's first: b waited for a's KV to be freed.
      expect(events.filter((e) => e.startsWith('c'))).to.deep.equal(['c aborted']);
      expect(events.filter((e) => e === 'a')).to.have.length(30);
      expect(events.lastIndexOf('a'), events.join(',')).to.be.below(events.indexOf('b'));
      expect(events.filter((e) => e === 'b')).to.have.length(30);
      const err = await rejection(generateOne(engine, PROMPTS[0]!, { maxTokens: 100, ignoreEos: true }));
      expect(err.code).to.equal('CONTEXT_TOO_LONG');
    } finally {
      await engine.dispose();
    }
  });

  it("a prompt over injected context joins the others' decode steps, with the tokens it gets alone", async () => {
    const batched = await createEngine({ modelDir: model.dir, backend: 'cpu', batching: { maxSequences: 8 } });
    try {
      const source = plain.createSession({ capacity: 128 });
      await source.prefill([1, ...plain.tokenizer.encode(PROMPTS[1]!, { addSpecialTokens: false })], { logits: 'none' });
      const context = await source.exportKV({ start: 0, end: source.length });
      source.dispose();
      const question = (i: number): number[] => plain.tokenizer.encode(` ${PROMPTS[i]!}`, { addSpecialTokens: false });
      const answer = async (engine: Engine, i: number, maxTokens: number, onToken?: () => void): Promise<number[]> => {
        const session = engine.createSession({ capacity: 128 });
        try {
          await session.injectKVAndPrefill([directReader(context, engine.info.fingerprint)], question(i));
          return (await session.generate({ maxTokens, ignoreEos: true }, onToken)).tokens;
        } finally {
          session.dispose();
        }
      };
      const alone: number[][] = [];
      for (const i of PROMPTS.keys()) alone.push(await answer(plain, i, i === 0 ? 24 : MAX_TOKENS[i]!));
      // The others start once the first decodes: their prompts' forwards join its steps instead of running alone.
      let decoding!: () => void;
      const firstToken = new Promise<void>((resolve) => (decoding = resolve));
      const first = answer(batched, 0, 24, () => decoding());
      await firstToken;
      const rest = await Promise.all(PROMPTS.slice(1).map((_, j) => answer(batched, j + 1, MAX_TOKENS[j + 1]!)));
      expect([await first, ...rest]).to.deep.equal(alone);
      const work = await batched.work();
      expect(work.calls.forward.count, 'forwards run alone: the first prompt only').to.equal(1);
      // In steps: the first's 24 tokens, the others' prompts and tokens.
      expect(work.batchSequences).to.equal(24 + PROMPTS.length - 1 + MAX_TOKENS.slice(1).reduce((a, b) => a + b, 0));
    } finally {
      await batched.dispose();
    }
  });

  it('refuses batching options no batcher can run with', async () => {
    const open = (batching: BatchingOptions): Promise<Engine> => createEngine({ modelDir: model.dir, backend: 'cpu', batching });
    expect((await rejection(open({ maxSequences: 0 }))).code).to.equal('INVALID_ARGUMENT');
    expect((await rejection(open({ maxSequences: 2, kvBudgetTokens: 1.5 }))).code).to.equal('INVALID_ARGUMENT');
  });
});
