import { expect } from 'chai';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { KdnError } from '../../common/errors.ts';
import { cpuForward } from '../../engine-adapter/cpu/forward.ts';
import { applyRope, rerotate, ropeInvFreq } from '../../engine-adapter/cpu/kernels/rope.ts';
import { CpuBackend } from '../../engine-adapter/cpu/cpu-backend.ts';
import type { KVCacheHandle } from '../../engine-adapter/backend.ts';
import { CpuKVCache } from '../../engine-adapter/cpu/kv-cache.ts';
import { createEngine } from '../../engine-adapter/create-engine.ts';
import { loadModelWeights } from '../../engine-adapter/model/load-weights.ts';
import { loadTokenizer } from '../../engine-adapter/model/tokenizer.ts';
import { BackendSession } from '../../engine-adapter/session.ts';
import type { Engine, GeneratedToken, Session } from '../../engine-adapter/types.ts';
import type { KVBlockReader, KVTensors } from '../../storage/kv-object/types.ts';
import { directReader, fileReader, fp16Reader } from './kv-readers.ts';
import { ARCHITECTURES, TempModels } from './temp-models.ts';
import { rejection } from '../support/rejection.ts';

/** Injection through the fp16 KV object: KV rounding to half precision moves logits by at most this much. */
const FP16_LOGIT_TOLERANCE = 0.02;
/** Injection of float32 KV: only float rounding differs (re-rotation of keys by 0). */
const FP32_LOGIT_TOLERANCE = 1e-4;
/** Keys re-rotated by p versus computed at p: float32 angle rounding (positions up to a few hundred). */
const REROTATION_TOLERANCE = 1e-4;

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).to.equal(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

function argmaxRows(logits: Float32Array, vocab: number): number[] {
  const out: number[] = [];
  for (let r = 0; r < logits.length / vocab; r++) {
    let best = 0;
    for (let i = 1; i < vocab; i++) if (logits[r * vocab + i]! > logits[r * vocab + best]!) best = i;
    out.push(best);
  }
  return out;
}

const PROMPT_A = 'The knowledge delivery network computes the KV cache of a document once, then ships it to every edge.';
const PROMPT_B = ' Question: where is the cache?';

describe('engine sessions on the cpu backend', () => {
  const models = new TempModels();
  after(() => models.cleanup());

  for (const architecture of ARCHITECTURES) {
    describe(architecture, () => {
      let engine: Engine;
      let a: number[];
      let b: number[];
      const open: Session[] = [];
      const session = (capacity?: number): Session => {
        const s = engine.createSession(capacity === undefined ? {} : { capacity });
        open.push(s);
        return s;
      };

      before(async () => {
        const m = await models.make({ architecture, dtype: 'bf16', seed: 3 });
        engine = await createEngine({ modelDir: m.dir, backend: 'cpu', capacity: 512 });
        a = engine.tokenizer.encode(PROMPT_A);
        b = engine.tokenizer.encode(PROMPT_B, { addSpecialTokens: false });
      });
      afterEach(() => open.splice(0).forEach((s) => s.dispose()));
      after(() => engine.dispose());

      it('injection is exact for a prefix: prefill(A+B) == inject(exportKV(A)) + prefill(B)', async () => {
        expect(a.length).to.be.greaterThan(32); // crosses Mistral's 32-token sliding window
        const vocab = engine.info.vocabSize;
        const full = await session().prefill([...a, ...b], { logits: 'all' });
        const expected = full.slice(a.length * vocab);

        const source = session();
        await source.prefill(a, { logits: 'none' });
        const kv = await source.exportKV({ start: 0, end: a.length });
        expect(kv).to.include({ tokens: a.length, positionBase: 0, ropeApplied: true, layers: engine.info.layers });

        const viaFp32 = session();
        await viaFp32.injectKV(directReader(kv, engine.info.fingerprint), 0);
        expect(viaFp32.length).to.equal(a.length);
        const fp32Diff = maxAbsDiff(await viaFp32.prefill(b, { logits: 'all' }), expected);

        const viaFp16 = session();
        await viaFp16.injectKV(await fp16Reader(kv, engine.info.fingerprint, a), 0);
        const got = await viaFp16.prefill(b, { logits: 'all' });
        const fp16Diff = maxAbsDiff(got, expected);
        console.log(
          `      ${architecture}: max |logit diff| over ${b.length} tokens: float32 KV ${fp32Diff.toExponential(2)}, fp16 KV object ${fp16Diff.toExponential(2)}`,
        );
        expect(fp32Diff).to.be.below(FP32_LOGIT_TOLERANCE);
        expect(fp16Diff).to.be.below(FP16_LOGIT_TOLERANCE);
        expect(argmaxRows(got, vocab)).to.deep.equal(argmaxRows(expected, vocab));

        // and generation continues identically
        const reference = session();
        await reference.prefill([...a, ...b]);
        const want = await reference.generate({ maxTokens: 12 });
        expect((await viaFp16.generate({ maxTokens: 12 })).tokens).to.deep.equal(want.tokens);
      });

      it('re-rotation is exact: a chunk computed alone at offset p == the chunk at offset 0 moved to p', async () => {
        const { weights } = await loadModelWeights(engine.info.path);
        const c = weights.config;
        const invFreq = ropeInvFreq(c);
        const chunk = Uint32Array.from(b);
        const n = chunk.length;
        const stride = c.kvHeads * c.headDim;
        const alone = (p: number): CpuKVCache => {
          const cache = new CpuKVCache(n, c.layers, stride);
          cpuForward(weights, invFreq, cache, chunk, 0, 'none', p);
          return cache;
        };
        const at0 = alone(0);
        const p = 300;
        const atP = alone(p);
        let worst = 0;
        for (let l = 0; l < c.layers; l++) {
          const moved = new Float32Array(n * stride);
          rerotate(moved, at0.keys[l]!.subarray(0, n * stride), n, c.kvHeads, c.headDim, p, invFreq);
          worst = Math.max(worst, maxAbsDiff(moved, atP.keys[l]!.subarray(0, n * stride)));
          expect(maxAbsDiff(at0.values[l]!.subarray(0, n * stride), atP.values[l]!.subarray(0, n * stride))).to.be.below(1e-5);
        }
        console.log(`      ${architecture}: max |key diff| re-rotated 0 -> ${p}: ${worst.toExponential(2)}`);
        expect(worst).to.be.below(REROTATION_TOLERANCE);

        // Through the session: inject the offset-0 chunk after p filler tokens, with RoPE applied and without.
        const kv0: KVTensors = {
          layers: c.layers,
          kvHeads: c.kvHeads,
          headDim: c.headDim,
          tokens: n,
          positionBase: 0,
          ropeApplied: true,
          perLayer: at0.keys.map((k, l) => ({ keys: k.slice(0, n * stride), values: at0.values[l]!.slice(0, n * stride) })),
        };
        const preRope: KVTensors = {
          ...kv0,
          ropeApplied: false,
          perLayer: kv0.perLayer.map(({ keys, values }) => {
            const unrotated = new Float32Array(keys.length);
            applyRope(
              unrotated,
              keys,
              n,
              c.kvHeads,
              c.headDim,
              Array.from({ length: n }, (_, t) => -t),
              invFreq,
            );
            return { keys: unrotated, values };
          }),
        };
        const filler = Array.from({ length: p }, (_, i) => 32 + (i % 90));
        for (const kv of [kv0, preRope]) {
          const s = session();
          await s.prefill(filler, { logits: 'none' });
          await s.injectKV(directReader(kv, engine.info.fingerprint), p);
          const exported = await s.exportKV({ start: p, end: p + n });
          expect(exported.positionBase).to.equal(p);
          for (let l = 0; l < c.layers; l++) {
            expect(maxAbsDiff(exported.perLayer[l]!.keys, atP.keys[l]!.subarray(0, n * stride))).to.be.below(REROTATION_TOLERANCE);
          }
        }
      });

      /** The KV of `a`'s first and second half, computed in one session. */
      async function halvesOfA(): Promise<{ half: number; first: KVTensors; second: KVTensors }> {
        const source = session();
        await source.prefill(a, { logits: 'none' });
        const half = Math.floor(a.length / 2);
        return {
          half,
          first: await source.exportKV({ start: 0, end: half }),
          second: await source.exportKV({ start: half, end: a.length }),
        };
      }

      it('injectKVAndPrefill places chunks layer by layer under the prompt: the same as injecting them one by one, then prefilling', async () => {
        const fp = engine.info.fingerprint;
        const { half, first, second } = await halvesOfA();

        const oneByOne = session();
        await oneByOne.injectKV(directReader(first, fp), 0);
        await oneByOne.injectKV(directReader(second, fp), half);
        const want = await oneByOne.prefill(b, { logits: 'all' });

        const overlapped = session();
        const got = await overlapped.injectKVAndPrefill([directReader(first, fp), directReader(second, fp)], b, { logits: 'all' });
        expect(maxAbsDiff(got.logits, want)).to.be.below(1e-6);
        expect(got.placedAt).to.be.greaterThan(0);
        expect(got.firstLayerAt).to.be.within(0, got.placedAt);
        expect(got.blockWaitMs).to.be.within(0, got.placedAt);
        expect(overlapped.length).to.equal(a.length + b.length);
        expect((await overlapped.generate({ maxTokens: 8 })).tokens).to.deep.equal((await oneByOne.generate({ maxTokens: 8 })).tokens);
      });

      it('injectKVAndPrefill takes objects still on their way (their token counts announced): the same as readers in hand', async () => {
        const fp = engine.info.fingerprint;
        const { first, second } = await halvesOfA();
        const inHand = session();
        const want = await inHand.injectKVAndPrefill([directReader(first, fp), directReader(second, fp)], b);
        const later = (kv: KVTensors, ms: number) => ({
          tokens: kv.tokens,
          reader: new Promise<KVBlockReader>((resolve) => setTimeout(() => resolve(directReader(kv, fp)), ms)),
        });
        // The second object's header comes first: each is placed at the rows its announced count set aside.
        const awaited = session();
        const got = await awaited.injectKVAndPrefill([later(first, 30), later(second, 5)], b);
        expect(maxAbsDiff(got.logits, want.logits)).to.be.below(1e-6);
        expect(awaited.length).to.equal(a.length + b.length);
        expect((await awaited.generate({ maxTokens: 8 })).tokens).to.deep.equal((await inHand.generate({ maxTokens: 8 })).tokens);
      });

      it('generate: greedy is deterministic and equals argmax step by step', async () => {
        const s1 = session();
        await s1.prefill(a);
        const r1 = await s1.generate({ maxTokens: 10 });
        const s2 = session();
        await s2.prefill(a);
        const r2 = await s2.generate({ maxTokens: 10 });
        expect(r2.tokens).to.deep.equal(r1.tokens);
        expect(r2.text).to.equal(r1.text);

        const manual = session();
        let logits = await manual.prefill(a);
        const picked: number[] = [];
        for (const _ of r1.tokens) {
          const id = argmaxRows(logits, engine.info.vocabSize)[0]!;
          picked.push(id);
          logits = await manual.prefill([id]);
        }
        expect(picked).to.deep.equal(r1.tokens);
      });

      it('generate: max tokens, streaming and a session that keeps the generated tokens', async () => {
        const s = session();
        await s.prefill(a);
        const streamed: GeneratedToken[] = [];
        const r = await s.generate({ maxTokens: 7, stopTokenIds: [] }, (t) => streamed.push(t));
        if (r.finishReason === 'length') expect(r.tokens).to.have.length(7);
        else expect(r.tokens.length).to.be.below(7);
        expect(streamed.map((t) => t.id)).to.deep.equal(r.tokens);
        expect(streamed.map((t) => t.text).join('')).to.equal(r.text);
        expect(r.text).to.equal(engine.tokenizer.decode(r.tokens));
        expect(s.length).to.equal(a.length + r.tokens.length);
        expect(r.firstTokenMs).to.be.at.least(0);
        expect(r.totalMs).to.be.at.least(r.firstTokenMs);
      });

      it('generate: stop strings end the text before them; stop token ids end before the token', async () => {
        const s = session();
        await s.prefill(a);
        const free = await s.generate({ maxTokens: 16 });
        expect(free.text.length).to.be.greaterThan(4);
        const stop = free.text.slice(3, 5);
        const cut = free.text.indexOf(stop);

        const t = session();
        await t.prefill(a);
        const pieces: string[] = [];
        const stopped = await t.generate({ maxTokens: 16, stopStrings: [stop] }, (tok) => pieces.push(tok.text));
        expect(stopped.finishReason).to.equal('stop');
        expect(stopped.text).to.equal(free.text.slice(0, cut));
        expect(pieces.join('')).to.equal(stopped.text);

        const stopId = free.tokens[2]!;
        const u = session();
        await u.prefill(a);
        const byId = await u.generate({ maxTokens: 16, stopTokenIds: [stopId] });
        expect(byId.finishReason).to.equal('stop');
        expect(byId.tokens).to.deep.equal(free.tokens.slice(0, free.tokens.indexOf(stopId)));
      });

      it('generate: seeded sampling repeats; an aborted signal stops at once', async () => {
        const sample = async (seed: number): Promise<number[]> => {
          const s = session();
          await s.prefill(a);
          return (await s.generate({ maxTokens: 8, temperature: 1.5, topP: 0.95, seed })).tokens;
        };
        expect(await sample(42)).to.deep.equal(await sample(42));
        const s = session();
        await s.prefill(a);
        const r = await s.generate({ maxTokens: 8, signal: AbortSignal.abort() });
        expect(r).to.include({ finishReason: 'aborted' });
        expect(r.tokens).to.deep.equal([]);
      });
    });
  }

  describe('errors', () => {
    let engine: Engine;
    before(async () => {
      const m = await models.make({ architecture: 'LlamaForCausalLM', seed: 4 });
      engine = await createEngine({ modelDir: m.dir, backend: 'cpu', capacity: 64 });
    });
    after(() => engine.dispose());

    it('injection verifies fingerprint, shape and position before touching the session', async () => {
      const src = engine.createSession();
      await src.prefill([1, 2, 3, 4]);
      const kv = await src.exportKV({ start: 0, end: 4 });
      const s = engine.createSession();
      await s.prefill([5]);
      expect((await rejection(s.injectKV(directReader(kv, 'f'.repeat(64)), 1))).code).to.equal('KV_MISMATCH');
      expect((await rejection(s.injectKV(directReader({ ...kv, kvHeads: kv.kvHeads + 1 }, engine.info.fingerprint), 1))).code).to.equal(
        'KV_MISMATCH',
      );
      expect((await rejection(s.injectKV(directReader(kv, engine.info.fingerprint), 0))).code).to.equal('INVALID_ARGUMENT');
      expect(s.length).to.equal(1);
    });

    /** The KV of tokens 10-15, and a session holding tokens 10 and 11 to inject it after. */
    async function kvAfterTwoTokens(): Promise<{ kv: KVTensors; s: Session }> {
      const src = engine.createSession();
      await src.prefill([10, 11, 12, 13, 14, 15]);
      const kv = await src.exportKV({ start: 0, end: 6 });
      const s = engine.createSession();
      await s.prefill([10, 11]);
      return { kv, s };
    }

    it('injectKVAndPrefill is all or nothing: a stream failing midway, or a mismatched object, leaves the session as it was', async () => {
      const fp = engine.info.fingerprint;
      const { kv, s } = await kvAfterTwoTokens();
      try {
        await s.injectKVAndPrefill([directReader(kv, fp), directReader(kv, fp, { failAfter: 1 })], [12, 13]);
        expect.fail('injected');
      } catch (err) {
        expect((err as Error).message).to.contain('connection reset');
      }
      expect(s.length).to.equal(2);
      expect((await rejection(s.injectKVAndPrefill([directReader(kv, fp), directReader(kv, 'f'.repeat(64))], [12]))).code).to.equal(
        'KV_MISMATCH',
      );
      expect((await rejection(s.injectKVAndPrefill([directReader(kv, fp)], [engine.info.vocabSize]))).code).to.equal('INVALID_ARGUMENT');
      expect(s.length).to.equal(2);
      // An object still on its way that fails, or comes with other than its announced token count.
      const failing = {
        tokens: kv.tokens,
        reader: new Promise<KVBlockReader>((_, reject) => setTimeout(() => reject(new KdnError('EDGE_UNAVAILABLE', 'edge down')), 5)),
      };
      expect((await rejection(s.injectKVAndPrefill([directReader(kv, fp), failing], [12]))).code).to.equal('EDGE_UNAVAILABLE');
      const miscounted = { tokens: kv.tokens + 1, reader: Promise.resolve(directReader(kv, fp)) };
      expect((await rejection(s.injectKVAndPrefill([miscounted], [12]))).code).to.equal('KV_MISMATCH');
      expect((await rejection(s.injectKVAndPrefill([{ tokens: 0, reader: Promise.resolve(directReader(kv, fp)) }], [12]))).code).to.equal(
        'INVALID_ARGUMENT',
      );
      expect(s.length).to.equal(2);

      const got = await s.injectKVAndPrefill([directReader(kv, fp)], [12, 13]);
      const reference = engine.createSession();
      await reference.prefill([10, 11]);
      await reference.injectKV(directReader(kv, fp), 2);
      expect(maxAbsDiff(got.logits, await reference.prefill([12, 13]))).to.be.below(1e-6);
      expect(s.length).to.equal(10);
    });

    it('layers that come as where they lie in a file inject as their bytes do; a file gone first fails, the session unchanged', async () => {
      const fp = engine.info.fingerprint;
      const { kv, s } = await kvAfterTwoTokens();
      const dir = mkdtempSync(join(tmpdir(), 'kdn-file-blocks-'));
      try {
        const ids = [10, 11, 12, 13, 14, 15];
        const gone = fileReader(kv, fp, ids, join(dir, 'gone'));
        rmSync(join(dir, 'gone'));
        expect((await rejection(s.injectKVAndPrefill([fileReader(kv, fp, ids, join(dir, 'kept')), gone], [12]))).code).to.equal(
          'EDGE_UNAVAILABLE',
        );
        expect(s.length).to.equal(2);

        const got = await s.injectKVAndPrefill([fileReader(kv, fp, ids, join(dir, 'object'))], [12, 13]);
        const reference = engine.createSession();
        await reference.prefill([10, 11]);
        await reference.injectKV(await fp16Reader(kv, fp, ids), 2);
        expect(maxAbsDiff(got.logits, await reference.prefill([12, 13]))).to.equal(0);
        expect(s.length).to.equal(10);
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    });

    it('a stream failing midway leaves the session at its old length, and it still computes correctly', async () => {
      const { kv, s } = await kvAfterTwoTokens();
      try {
        await s.injectKV(directReader(kv, engine.info.fingerprint, { failAfter: 1 }), 2);
        expect.fail('injected');
      } catch (err) {
        expect((err as Error).message).to.contain('connection reset');
      }
      expect(s.length).to.equal(2);
      const after = await s.prefill([12, 13]);
      const fresh = engine.createSession();
      expect(maxAbsDiff(after, await fresh.prefill([10, 11, 12, 13]))).to.be.below(1e-5);
    });

    it('injected rows the device rejects are rolled back at the next call that reads the cache, which throws', async () => {
      const src = engine.createSession();
      await src.prefill([10, 11, 12, 13, 14, 15]);
      const kv = await src.exportKV({ start: 0, end: 6 });
      // The CPU backend, except that its first confirmation of injected writes fails as a lost device would.
      const { weights, fingerprint } = await loadModelWeights(engine.info.path);
      let failures = 1;
      const backend = new (class extends CpuBackend {
        override async settleKVWrites(cache: KVCacheHandle): Promise<void> {
          if (failures-- > 0) throw new KdnError('ENGINE_UNAVAILABLE', 'device lost while writing KV');
          return super.settleKVWrites(cache);
        }
      })(weights);
      const model = { config: weights.config, fingerprint, tokenizer: await loadTokenizer(engine.info.path) };
      const s = new BackendSession(backend, model, 64);
      await s.prefill([10, 11]);
      await s.injectKV(directReader(kv, fingerprint), 2);
      expect(s.length).to.equal(8);
      expect((await rejection(s.prefill([12, 13]))).code).to.equal('ENGINE_UNAVAILABLE');
      expect(s.length).to.equal(2);
      const after = await s.prefill([12, 13]);
      expect(maxAbsDiff(after, await engine.createSession().prefill([10, 11, 12, 13]))).to.be.below(1e-5);
    });

    it('reserve: up to the capacity, computing as without it; beyond it or negative is INVALID_ARGUMENT', async () => {
      const s = engine.createSession({ capacity: 16 });
      expect((await rejection(s.reserve(17))).code).to.equal('INVALID_ARGUMENT');
      expect((await rejection(s.reserve(-1))).code).to.equal('INVALID_ARGUMENT');
      await s.reserve(16);
      expect(s.length).to.equal(0);
      const reserved = await s.prefill([3, 4, 5]);
      expect(maxAbsDiff(reserved, await engine.createSession({ capacity: 16 }).prefill([3, 4, 5]))).to.equal(0);
    });

    it('capacity: prefill and inject beyond it are CONTEXT_TOO_LONG; generate ends at it', async () => {
      const s = engine.createSession({ capacity: 8 });
      expect((await rejection(s.prefill(Array.from({ length: 9 }, () => 1)))).code).to.equal('CONTEXT_TOO_LONG');
      await s.prefill([1, 2, 3, 4, 5]);
      const src = engine.createSession();
      await src.prefill([1, 2, 3, 4]);
      const kv = await src.exportKV({ start: 0, end: 4 });
      expect((await rejection(s.injectKV(directReader(kv, engine.info.fingerprint), 5))).code).to.equal('CONTEXT_TOO_LONG');
      const r = await s.generate({ maxTokens: 10, stopTokenIds: [] });
      expect(s.length).to.equal(8);
      expect(r.tokens.length).to.be.at.most(4);
      expect(() => engine.createSession({ capacity: 10_000 })).to.throw(KdnError);
    });

    it('bad arguments are INVALID_ARGUMENT; overlapping calls are CONFLICT', async () => {
      const s = engine.createSession();
      expect(await rejection(s.prefill([engine.info.vocabSize]))).to.include({ code: 'INVALID_ARGUMENT' });
      expect(await rejection(s.prefill([]))).to.include({ code: 'INVALID_ARGUMENT' });
      expect(await rejection(s.generate({ maxTokens: 3 }))).to.include({ code: 'INVALID_ARGUMENT' });
      await s.prefill([1, 2, 3]);
      expect(await rejection(s.exportKV({ start: 2, end: 4 }))).to.include({ code: 'INVALID_ARGUMENT' });
      expect(await rejection(s.generate({ maxTokens: 0 }))).to.include({ code: 'INVALID_ARGUMENT' });
      const first = s.prefill([4]);
      expect(await rejection(s.prefill([5]))).to.include({ code: 'CONFLICT' });
      await first;
      s.truncate(2);
      expect(s.length).to.equal(2);
      // generate after truncate recomputes the logits of the last kept token
      expect((await s.generate({ maxTokens: 2 })).tokens.length).to.be.greaterThan(0);
      expect(() => s.truncate(99)).to.throw(KdnError);
    });
  });
});
