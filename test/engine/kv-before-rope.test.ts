import { expect } from 'chai';
import { createEngine } from '../../engine-adapter/create-engine.ts';
import { kvBeforeRope, loadModelConfig } from '../../engine-adapter/index.ts';
import type { Engine } from '../../engine-adapter/types.ts';
import { directReader } from './kv-readers.ts';
import { ARCHITECTURES, TempModels } from './temp-models.ts';

/** Unrotating then rotating at injection differs from keeping the rotation only by float32 angle rounding. */
const LOGIT_TOLERANCE = 1e-3;

const PROMPT_A = 'A chunk of some length, long enough to move keys far from position zero before it is unrotated.';
const PROMPT_B = ' And a question after it?';

describe('kvBeforeRope: exported keys rotated back to before RoPE inject like the rotated ones', () => {
  const models = new TempModels();
  after(() => models.cleanup());

  for (const architecture of ARCHITECTURES) {
    it(`${architecture}${architecture === 'LlamaForCausalLM' ? ' (llama3 rope scaling)' : ''}`, async () => {
      const m = await models.make({ architecture, dtype: 'bf16', seed: 5 });
      const engine: Engine = await createEngine({ modelDir: m.dir, backend: 'cpu', capacity: 256 });
      try {
        const config = await loadModelConfig(m.dir);
        const a = engine.tokenizer.encode(PROMPT_A);
        const b = engine.tokenizer.encode(PROMPT_B, { addSpecialTokens: false });
        const vocab = engine.info.vocabSize;
        const full = engine.createSession();
        const expected = (await full.prefill([...a, ...b], { logits: 'all' })).slice(a.length * vocab);
        // Export a range that does not start at 0, so positions (and the unrotation angles) are not trivial.
        const kv = await full.exportKV({ start: 3, end: a.length });
        const unrotated = kvBeforeRope(kv, config);
        expect(unrotated.ropeApplied).to.equal(false);
        expect(kv.ropeApplied, 'input untouched').to.equal(true);
        expect(unrotated.perLayer[0]!.keys).to.not.deep.equal(kv.perLayer[0]!.keys);
        expect(unrotated.perLayer[0]!.values).to.equal(kv.perLayer[0]!.values);

        const session = engine.createSession();
        await session.prefill(a.slice(0, 3), { logits: 'none' });
        await session.injectKV(directReader(unrotated, engine.info.fingerprint), 3);
        const got = await session.prefill(b, { logits: 'all' });
        let worst = 0;
        for (let i = 0; i < got.length; i++) worst = Math.max(worst, Math.abs(got[i]! - expected[i]!));
        expect(worst).to.be.below(LOGIT_TOLERANCE);
        full.dispose();
        session.dispose();
      } finally {
        await engine.dispose();
      }
    });
  }
});
