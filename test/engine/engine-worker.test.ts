import { performance } from 'node:perf_hooks';
import { expect } from 'chai';
import { KdnError } from '../../common/errors.ts';
import { createEngine, createEngineInWorker, type Engine } from '../../engine-adapter/index.ts';
import type { KVBlockReader, KVTensors } from '../../storage/kv-object/types.ts';
import { fp16Reader } from './kv-readers.ts';
import { testModel, type TestModel } from '../kdn/support/tiny-model.ts';

const TEXT = 'The river carries water to the sea. A miller watches the ships at night, and the old bridge remembers the floods.';

function maxDiff(a: Float32Array, b: Float32Array): number {
  expect(a.length).to.equal(b.length);
  let max = 0;
  for (let i = 0; i < a.length; i++) max = Math.max(max, Math.abs(a[i]! - b[i]!));
  return max;
}

/**
 * The engine on its own thread (engine-adapter/worker) against the same engine in this thread: the proxy must give
 * the very same logits, KV, greedy tokens and injection results, keep `length` exact, stop generating on abort, and
 * turn a dead thread into ENGINE_UNAVAILABLE rather than a hang.
 */
describe('engine on a worker thread (createEngineInWorker)', function () {
  this.timeout(120_000);
  let model: TestModel;
  let local: Engine;
  let remote: Engine;

  before(async () => {
    model = await testModel();
    local = await createEngine({ modelDir: model.dir, backend: 'cpu' });
    remote = await createEngineInWorker({ modelDir: model.dir, backend: 'cpu' });
  });

  after(async () => {
    await remote?.dispose();
    await local?.dispose();
    await model?.cleanup();
  });

  it('describes the same model and gives identical logits, exported KV and greedy tokens', async () => {
    expect(remote.info).to.deep.equal(local.info);
    expect(remote.backend).to.equal(local.backend);
    const ids = local.tokenizer.encode(TEXT, { addSpecialTokens: false });
    const run = async (
      engine: Engine,
    ): Promise<{ logits: Float32Array; kv: KVTensors; tokens: number[]; text: string; length: number }> => {
      const session = engine.createSession({ capacity: 128 });
      try {
        await session.reserve(64);
        const logits = await session.prefill([1, ...ids], { logits: 'last' });
        const kv = await session.exportKV({ start: 1, end: session.length });
        const result = await session.generate({ maxTokens: 12, ignoreEos: true });
        return { logits, kv, tokens: result.tokens, text: result.text, length: session.length };
      } finally {
        session.dispose();
      }
    };
    const [a, b] = [await run(local), await run(remote)];
    expect(maxDiff(a.logits, b.logits)).to.equal(0);
    for (let l = 0; l < a.kv.layers; l++) expect(maxDiff(a.kv.perLayer[l]!.keys, b.kv.perLayer[l]!.keys)).to.equal(0);
    expect(b.tokens).to.deep.equal(a.tokens);
    expect(b.text).to.equal(a.text);
    expect(b.length)
      .to.equal(a.length)
      .and.equal(1 + ids.length + 12);
  });

  it("reports the event loop of the engine's own thread in work(): this thread's in process, the worker's there", async () => {
    const total = (loop: { activeSeconds: number; idleSeconds: number }): number => loop.activeSeconds + loop.idleSeconds;
    const thisThread = (): number => {
      const { active, idle } = performance.eventLoopUtilization();
      return (active + idle) / 1000;
    };
    const before = (await remote.work()).loop;
    const session = remote.createSession({ capacity: 128 });
    try {
      await session.prefill([1, ...local.tokenizer.encode(TEXT, { addSpecialTokens: false })], { logits: 'last' });
    } finally {
      session.dispose();
    }
    const after = (await remote.work()).loop;
    expect(after.activeSeconds, 'the worker computed the prefill').to.be.greaterThan(before.activeSeconds);
    // The worker's loop started after this one, so it has run for less time; the in-process engine reads this loop.
    expect(total(after)).to.be.lessThan(thisThread() - 0.01);
    expect(total((await local.work()).loop)).to.be.closeTo(thisThread(), 0.01);
  });

  /** A 16-token chunk of TEXT, its KV computed after the sink token by the engine in this thread, and a prompt after it. */
  async function chunkAfterSink(): Promise<{ chunk: number[]; prompt: number[]; kv: KVTensors }> {
    const ids = local.tokenizer.encode(TEXT, { addSpecialTokens: false });
    const source = local.createSession({ capacity: 64 });
    try {
      await source.prefill([1, ...ids.slice(0, 16)], { logits: 'none' });
      return { chunk: ids.slice(0, 16), prompt: ids.slice(16, 24), kv: await source.exportKV({ start: 1, end: source.length }) };
    } finally {
      source.dispose();
    }
  }

  it('injects KV objects (one by one, and overlapped with the prompt) exactly as the engine in this thread does', async () => {
    const { chunk, prompt, kv } = await chunkAfterSink();
    const run = async (engine: Engine, overlapped: boolean): Promise<{ logits: Float32Array; length: number }> => {
      const session = engine.createSession({ capacity: 64 });
      try {
        await session.prefill([1], { logits: 'none' });
        const reader = await fp16Reader(kv, engine.info.fingerprint, chunk);
        if (overlapped) {
          const called = performance.now();
          const { logits, placedAt, firstLayerAt, blockWaitMs, handOver } = await session.injectKVAndPrefill([reader], prompt);
          expect(placedAt).to.be.a('number').and.at.most(performance.now());
          expect(firstLayerAt).to.be.within(called - 1, placedAt);
          expect(blockWaitMs).to.be.within(0, placedAt - called + 1);
          // Only the engine on its own thread says when the call began there and the blocks got there: in that order,
          // after the call here, the last before they were placed (the call's time is this thread's clock, theirs the
          // worker's converted: a millisecond allows for that).
          if (engine === remote) {
            const { startedAt, firstBlockAt, receivedAt } = handOver!;
            expect(startedAt).to.be.within(called - 1, firstBlockAt + 1);
            expect(firstBlockAt).to.be.at.most(receivedAt);
            expect(receivedAt).to.be.within(called - 1, placedAt);
          } else expect(handOver).to.equal(undefined);
          return { logits, length: session.length };
        }
        await session.injectKV(reader, session.length);
        return { logits: await session.prefill(prompt), length: session.length };
      } finally {
        session.dispose();
      }
    };
    for (const overlapped of [false, true]) {
      const [a, b] = [await run(local, overlapped), await run(remote, overlapped)];
      expect(b.length)
        .to.equal(a.length)
        .and.equal(1 + chunk.length + prompt.length);
      expect(maxDiff(a.logits, b.logits)).to.equal(0);
    }
  });

  it('blends chunks computed alone exactly as the engine in this thread does, reporting what it recomputed', async () => {
    const ids = local.tokenizer.encode(TEXT, { addSpecialTokens: false });
    const chunks = [ids.slice(0, 10), ids.slice(10, 20)];
    const prompt = ids.slice(20, 26);
    const alone: KVTensors[] = [];
    for (const chunk of chunks) {
      const source = local.createSession({ capacity: 64 });
      await source.prefill([1, ...chunk], { logits: 'none' });
      alone.push(await source.exportKV({ start: 1, end: source.length }));
      source.dispose();
    }
    const run = async (engine: Engine) => {
      const session = engine.createSession({ capacity: 64 });
      try {
        await session.prefill([1], { logits: 'none' });
        const blendChunks = await Promise.all(
          chunks.map(async (tokenIds, i) => ({ object: await fp16Reader(alone[i]!, engine.info.fingerprint, tokenIds), tokenIds })),
        );
        const out = await session.blendKVAndPrefill(blendChunks, prompt, { ratio: 0.25, selection: 'attended' });
        return { ...out, length: session.length };
      } finally {
        session.dispose();
      }
    };
    const [a, b] = [await run(local), await run(remote)];
    expect(b.length)
      .to.equal(a.length)
      .and.equal(1 + 20 + prompt.length);
    expect(b.recomputed).to.equal(a.recomputed).and.equal(5);
    expect(b.fullLayers).to.equal(a.fullLayers).and.equal(1);
    expect(maxDiff(a.logits, b.logits)).to.equal(0);
  });

  it('takes objects whose header is still on its way: the same logits once they come, and a failed one fails the call alone', async () => {
    const { chunk, prompt, kv } = await chunkAfterSink();
    const fp = remote.info.fingerprint;
    const session = remote.createSession({ capacity: 64 });
    try {
      await session.prefill([1], { logits: 'none' });
      const failing = {
        tokens: chunk.length,
        reader: new Promise<KVBlockReader>((_, reject) => setTimeout(() => reject(new KdnError('EDGE_UNAVAILABLE', 'edge down')), 20)),
      };
      const err = await session.injectKVAndPrefill([failing], prompt).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).to.be.instanceOf(KdnError).with.property('code', 'EDGE_UNAVAILABLE');
      expect(session.length).to.equal(1);
      const later = {
        tokens: chunk.length,
        reader: new Promise<KVBlockReader>((resolve) => setTimeout(() => resolve(fp16Reader(kv, fp, chunk)), 20)),
      };
      const got = await session.injectKVAndPrefill([later], prompt);
      const reference = local.createSession({ capacity: 64 });
      await reference.prefill([1], { logits: 'none' });
      const want = await reference.injectKVAndPrefill([await fp16Reader(kv, local.info.fingerprint, chunk)], prompt);
      reference.dispose();
      expect(maxDiff(got.logits, want.logits)).to.equal(0);
      expect(session.length).to.equal(1 + chunk.length + prompt.length);
    } finally {
      session.dispose();
    }
  });

  it('rejects a mismatched object with KV_MISMATCH and leaves the session as it was', async () => {
    const session = remote.createSession({ capacity: 64 });
    try {
      await session.prefill([1, 5, 6], { logits: 'none' });
      const kv: KVTensors = {
        layers: remote.info.layers,
        kvHeads: remote.info.kvHeads,
        headDim: remote.info.headDim,
        tokens: 2,
        positionBase: 1,
        ropeApplied: true,
        perLayer: Array.from({ length: remote.info.layers }, () => ({
          keys: new Float32Array(2 * remote.info.kvHeads * remote.info.headDim),
          values: new Float32Array(2 * remote.info.kvHeads * remote.info.headDim),
        })),
      };
      const reader = await fp16Reader(kv, 'another-model', [7, 8]);
      const err = await session.injectKV(reader, session.length).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).to.be.instanceOf(KdnError).with.property('code', 'KV_MISMATCH');
      expect(session.length).to.equal(3);
      expect((await session.prefill([9])).length).to.equal(remote.info.vocabSize);
      expect(session.length).to.equal(4);
    } finally {
      session.dispose();
    }
  });

  it('stops generating when the signal fires, and streams tokens as they come', async () => {
    const session = remote.createSession({ capacity: 512 });
    try {
      await session.prefill([1, 5, 6], { logits: 'last' });
      const abort = new AbortController();
      const seen: number[] = [];
      const result = await session.generate({ maxTokens: 400, ignoreEos: true, signal: abort.signal }, (token) => {
        seen.push(token.id);
        if (seen.length === 3) abort.abort();
      });
      expect(result.finishReason).to.equal('aborted');
      expect(result.tokens.length).to.be.below(10);
      expect(seen.slice(0, result.tokens.length)).to.deep.equal(result.tokens);
      expect(session.length).to.equal(3 + result.tokens.length);
    } finally {
      session.dispose();
    }
  });

  it('runs the WebGPU backend on its thread with the same results as on this one (skips without an adapter)', async function () {
    // A tiny random model: a software adapter is slow.
    const tiny = await testModel({ preferShipped: false });
    let gpuRemote: Engine;
    try {
      gpuRemote = await createEngineInWorker({ modelDir: tiny.dir, backend: 'webgpu' });
    } catch (err) {
      await tiny.cleanup();
      if (process.env.CI === 'true') throw err;
      console.log(`      no WebGPU adapter, skipping: ${(err as Error).message}`);
      this.skip();
    }
    const gpuLocal = await createEngine({ modelDir: tiny.dir, backend: 'webgpu' });
    try {
      const run = async (engine: Engine): Promise<{ logits: Float32Array; tokens: number[] }> => {
        const session = engine.createSession({ capacity: 32 });
        try {
          const logits = await session.prefill([1, 5, 9, 14, 3, 7]);
          return { logits, tokens: (await session.generate({ maxTokens: 6, ignoreEos: true })).tokens };
        } finally {
          session.dispose();
        }
      };
      const [a, b] = [await run(gpuLocal), await run(gpuRemote!)];
      expect(gpuRemote!.device).to.equal(gpuLocal.device);
      expect(maxDiff(a.logits, b.logits)).to.equal(0);
      expect(b.tokens).to.deep.equal(a.tokens);
    } finally {
      await gpuLocal.dispose();
      await gpuRemote!.dispose();
      await tiny.cleanup();
    }
  });

  it('refuses a session larger than its capacity at once, and answers ENGINE_UNAVAILABLE once disposed', async () => {
    expect(() => remote.createSession({ capacity: 10 ** 7 }))
      .to.throw(KdnError)
      .with.property('code', 'CONTEXT_TOO_LONG');
    const short = await createEngineInWorker({ modelDir: model.dir, backend: 'cpu' });
    const session = short.createSession({ capacity: 16 });
    await short.dispose();
    const old = await session.prefill([1, 2]).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(old).to.be.instanceOf(KdnError).with.property('code', 'ENGINE_UNAVAILABLE');
    const err = await short
      .createSession({ capacity: 16 })
      .prefill([1, 2])
      .then(
        () => undefined,
        (e: unknown) => e,
      );
    expect(err).to.be.instanceOf(KdnError).with.property('code', 'ENGINE_UNAVAILABLE');
  });
});
