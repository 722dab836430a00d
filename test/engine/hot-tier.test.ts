import { expect } from 'chai';
import { KdnError } from '../../common/errors.ts';
import { CpuBackend } from '../../engine-adapter/cpu/cpu-backend.ts';
import type { KVCacheHandle } from '../../engine-adapter/backend.ts';
import { CpuKVRows } from '../../engine-adapter/cpu/cpu-kv-rows.ts';
import { CpuKVCache } from '../../engine-adapter/cpu/kv-cache.ts';
import { createEngine } from '../../engine-adapter/create-engine.ts';
import { HotTier } from '../../engine-adapter/hot-tier.ts';
import { loadModelWeights } from '../../engine-adapter/model/load-weights.ts';
import { loadTokenizer } from '../../engine-adapter/model/tokenizer.ts';
import { BackendSession } from '../../engine-adapter/session.ts';
import type { BackendName, Engine, ResidentKey, Session } from '../../engine-adapter/types.ts';
import { probeWebGPU } from '../../engine-adapter/webgpu/webgpu-backend.ts';
import { tokenHash } from '../../storage/kv-object/index.ts';
import type { KVTensors } from '../../storage/kv-object/types.ts';
import { rejection } from '../support/rejection.ts';
import { fp16Reader } from './kv-readers.ts';
import { TempModels } from './temp-models.ts';

/** Rows copied back at the position they were kept at: only the device's float reductions may differ. */
const SAME_POSITION_TOLERANCE = 1e-4;
/** Kept at one position, placed at another: the keys' re-rotation rounds (as the injection of a moved chunk does). */
const MOVED_TOLERANCE = 2e-3;

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).to.equal(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

const CHUNK = Array.from({ length: 40 }, (_, i) => 7 + ((i * 13) % 90));
const OTHER = Array.from({ length: 40 }, (_, i) => 11 + ((i * 29) % 90));
const QUESTION = [21, 22, 23, 24, 25];
const SINK = 1;

function keyOf(tenant: string, objectKey: string, ids: number[]): ResidentKey {
  return { tenant, objectKey, tokenHash: tokenHash(ids) };
}

for (const backend of ['cpu', 'webgpu'] as BackendName[]) {
  describe(`engine hot tier (${backend} backend)`, () => {
    const models = new TempModels();
    let modelDir: string;
    let engine: Engine;
    let chunkKV: KVTensors;
    let otherKV: KVTensors;
    const open: Session[] = [];
    const session = (e: Engine = engine): Session => {
      const s = e.createSession({ capacity: 256 });
      open.push(s);
      return s;
    };
    /** The KV of `ids` computed alone from position 0, as ingest stores a chunk. */
    const computeKV = async (ids: number[]): Promise<KVTensors> => {
      const s = session();
      await s.prefill(ids, { logits: 'none' });
      return s.exportKV({ start: 0, end: ids.length });
    };
    /** A fresh session: the sink, then `ids`' KV from its fp16 object, then the question's logits. */
    type Injected = { s: Session; logits: Float32Array };
    const viaObject = async (e: Engine, kv: KVTensors, ids: number[], prefix: number[] = [SINK]): Promise<Injected> => {
      const s = session(e);
      await s.prefill(prefix, { logits: 'none' });
      await s.injectKV(await fp16Reader(kv, e.info.fingerprint, ids), s.length);
      return { s, logits: await s.prefill(QUESTION) };
    };

    before(async function () {
      if (backend === 'webgpu') {
        const probe = await probeWebGPU();
        if (!probe.available) {
          if (process.env.CI === 'true') throw new Error(`no WebGPU adapter under CI: ${probe.reason}`);
          console.log(`      no WebGPU adapter, skipping: ${probe.reason}`);
          this.skip();
        }
      }
      modelDir = (await models.make({ architecture: 'LlamaForCausalLM', seed: 5 })).dir;
      engine = await createEngine({ modelDir, backend, capacity: 256 });
      chunkKV = await computeKV(CHUNK);
      otherKV = await computeKV(OTHER);
    });
    afterEach(() => open.splice(0).forEach((s) => s.dispose()));
    after(async () => {
      await engine?.dispose();
      await models.cleanup();
    });

    it('a repeated chunk is placed from the tier and gives the same logits as its object did', async () => {
      const key = keyOf('acme', 'kv/acme/chunk-a', CHUNK);
      const first = await viaObject(engine, chunkKV, CHUNK);
      expect(await first.s.residentChunks([key])).to.deep.equal([false]);
      await first.s.keepResident(key, { start: 1, end: 1 + CHUNK.length });

      const again = session();
      await again.prefill([SINK], { logits: 'none' });
      expect(await again.residentChunks([key])).to.deep.equal([true]);
      expect(await again.injectResident(key, 1)).to.equal(true);
      expect(again.length).to.equal(1 + CHUNK.length);
      expect(maxAbsDiff(await again.prefill(QUESTION), first.logits)).to.be.below(SAME_POSITION_TOLERANCE);
    });

    it('a row kept from the start of one session starts an empty one as its prefill would (the sink token)', async () => {
      const key = keyOf('', 'sink', [SINK]);
      const computed = session();
      await computed.prefill([SINK], { logits: 'none' });
      await computed.keepResident(key, { start: 0, end: 1 });
      const expected = await computed.prefill(QUESTION);

      const placed = session();
      expect(await placed.injectResident(key, 0)).to.equal(true);
      expect(placed.length).to.equal(1);
      expect(maxAbsDiff(await placed.prefill(QUESTION), expected)).to.be.below(SAME_POSITION_TOLERANCE);
    });

    it('a resident chunk placed at another position is re-rotated like an injected object', async () => {
      const key = keyOf('acme', 'kv/acme/chunk-moved', CHUNK);
      const kept = await viaObject(engine, chunkKV, CHUNK);
      await kept.s.keepResident(key, { start: 1, end: 1 + CHUNK.length });
      const prefix = [SINK, 30, 31, 32];
      const expected = (await viaObject(engine, chunkKV, CHUNK, prefix)).logits;
      const moved = session();
      await moved.prefill(prefix, { logits: 'none' });
      expect(await moved.injectResident(key, prefix.length)).to.equal(true);
      expect(maxAbsDiff(await moved.prefill(QUESTION), expected)).to.be.below(MOVED_TOLERANCE);
    });

    it("another tenant never finds a tenant's entry, even under the same object key", async () => {
      const mine = keyOf('tenant-a', 'kv/shared-name', CHUNK);
      const theirs = { ...mine, tenant: 'tenant-b' };
      const first = await viaObject(engine, chunkKV, CHUNK);
      await first.s.keepResident(mine, { start: 1, end: 1 + CHUNK.length });
      const s = session();
      await s.prefill([SINK], { logits: 'none' });
      expect(await s.residentChunks([mine, theirs])).to.deep.equal([true, false]);
      expect(await s.injectResident(theirs, 1)).to.equal(false);
      expect(s.length).to.equal(1);
    });

    it('evicts the least recently used entries once its bytes are full, and 0 bytes keeps nothing', async () => {
      // f32 K and V of every layer for one 40-token chunk; room for one and a half.
      const entryBytes = 2 * engine.info.layers * engine.info.kvHeads * engine.info.headDim * 4 * CHUNK.length;
      const small = await createEngine({ modelDir, backend, capacity: 256, hotTierBytes: Math.floor(entryBytes * 1.5) });
      const off = await createEngine({ modelDir, backend, capacity: 256, hotTierBytes: 0 });
      try {
        const a = keyOf('acme', 'kv/a', CHUNK);
        const b = keyOf('acme', 'kv/b', OTHER);
        const first = await viaObject(small, chunkKV, CHUNK);
        await first.s.keepResident(a, { start: 1, end: 1 + CHUNK.length });
        const second = await viaObject(small, otherKV, OTHER);
        expect(await second.s.residentChunks([a, b])).to.deep.equal([true, false]);
        await second.s.keepResident(b, { start: 1, end: 1 + OTHER.length });
        expect(await second.s.residentChunks([a, b])).to.deep.equal([false, true]);

        const none = await viaObject(off, chunkKV, CHUNK);
        await none.s.keepResident(a, { start: 1, end: 1 + CHUNK.length });
        expect(await none.s.residentChunks([a])).to.deep.equal([false]);
      } finally {
        await small.dispose();
        await off.dispose();
      }
    });

    it('keeps no entry for rows outside the session', async () => {
      const key = keyOf('acme', 'kv/outside', CHUNK);
      const s = session();
      await s.prefill([SINK, 2, 3], { logits: 'none' });
      expect((await rejection(s.keepResident(key, { start: 1, end: 10 }))).code).to.equal('INVALID_ARGUMENT');
      expect(await s.residentChunks([key])).to.deep.equal([false]);
    });
  });
}

describe('HotTier', () => {
  const rows = (tokens: number): CpuKVRows => CpuKVRows.save(new CpuKVCache(64, 2, 8), 0, tokens);
  const key = (name: string): ResidentKey => ({ tenant: 't', objectKey: name, tokenHash: 'h' });

  it('evicts by bytes, least recently used first: an entry used since it was kept outlives older ones', () => {
    const oneEntry = rows(4).bytes;
    const tier = new HotTier(3 * oneEntry, 'model');
    for (const name of ['a', 'b', 'c']) expect(tier.keep(key(name), rows(4))).to.equal(true);
    expect(tier.use(key('a'))).to.not.equal(undefined);
    tier.keep(key('d'), rows(4));
    expect(['a', 'b', 'c', 'd'].map((n) => tier.has(key(n)))).to.deep.equal([true, false, true, true]);
    expect(tier.bytes).to.equal(3 * oneEntry);
    // Twice an entry's size makes room by dropping the two least recently used.
    tier.keep(key('e'), rows(8));
    expect(['a', 'c', 'd', 'e'].map((n) => tier.has(key(n)))).to.deep.equal([false, false, true, true]);
    expect(tier.bytes).to.equal(3 * oneEntry);
  });

  it('refuses rows larger than the whole tier', () => {
    const tier = new HotTier(rows(4).bytes, 'model');
    expect(tier.keep(key('big'), rows(8))).to.equal(false);
    expect(tier.size).to.equal(0);
    tier.keep(key('a'), rows(4));
    tier.clear();
    expect([tier.size, tier.bytes]).to.deep.equal([0, 0]);
  });
});

describe('engine hot tier after a rejected injection', () => {
  const models = new TempModels();
  after(() => models.cleanup());

  it('rows the device rejected are never kept, and the entries already there stay usable', async () => {
    const { dir } = await models.make({ architecture: 'LlamaForCausalLM', seed: 5 });
    const { weights, fingerprint } = await loadModelWeights(dir);
    // The CPU backend, except that one confirmation of injected writes fails as a lost device would.
    let failNext = false;
    const backend = new (class extends CpuBackend {
      override async settleKVWrites(cache: KVCacheHandle): Promise<void> {
        if (failNext) {
          failNext = false;
          throw new KdnError('ENGINE_UNAVAILABLE', 'device lost while writing KV');
        }
        return super.settleKVWrites(cache);
      }
    })(weights);
    const model = { config: weights.config, fingerprint, tokenizer: await loadTokenizer(dir) };
    const tier = new HotTier(1 << 30, fingerprint);
    const make = (): BackendSession => new BackendSession(backend, model, 128, tier);

    const source = make();
    await source.prefill(CHUNK, { logits: 'none' });
    const kv = await source.exportKV({ start: 0, end: CHUNK.length });
    const good = keyOf('acme', 'kv/good', CHUNK);
    const bad = keyOf('acme', 'kv/bad', CHUNK);

    const first = make();
    await first.prefill([SINK], { logits: 'none' });
    await first.injectKV(await fp16Reader(kv, fingerprint, CHUNK), 1);
    await first.keepResident(good, { start: 1, end: 1 + CHUNK.length });
    const expected = await first.prefill(QUESTION);

    const rejected = make();
    await rejected.prefill([SINK], { logits: 'none' });
    await rejected.injectKV(await fp16Reader(kv, fingerprint, CHUNK), 1);
    failNext = true;
    expect((await rejection(rejected.keepResident(bad, { start: 1, end: 1 + CHUNK.length }))).code).to.equal('ENGINE_UNAVAILABLE');
    expect(rejected.length).to.equal(1);
    expect(await rejected.residentChunks([good, bad])).to.deep.equal([true, false]);
    expect(tier.size).to.equal(1);

    const again = make();
    await again.prefill([SINK], { logits: 'none' });
    expect(await again.injectResident(good, 1)).to.equal(true);
    expect(maxAbsDiff(await again.prefill(QUESTION), expected)).to.equal(0);
  });
});
