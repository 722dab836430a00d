/**
 * Objects of the transform codec injected through the WebGPU engine on its own thread (the table crossing the
 * worker protocol once, blocks expanded on the GPU) against the CPU engine in this thread decoding them with the
 * storage codec: the same logits after the context and a question. Also the table's checks at the engine.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { expect } from 'chai';
import { applyRope, ropeInvFreq } from '../../engine-adapter/cpu/kernels/rope.ts';
import { createEngine, createEngineInWorker, type Engine } from '../../engine-adapter/index.ts';
import { loadModelConfig } from '../../engine-adapter/model/load-config.ts';
import { probeWebGPU } from '../../engine-adapter/webgpu/webgpu-backend.ts';
import { fitTransformTable } from '../../storage/kv-object/codecs/transform-fit.ts';
import type { TransformTable } from '../../storage/kv-object/codecs/transform-table.ts';
import { transformTables } from '../../storage/kv-object/codecs/transform-tables.ts';
import { encodeKVObject, readKVObject, tokenHash } from '../../storage/kv-object/index.ts';
import type { KVObjectReader, KVTensors } from '../../storage/kv-object/types.ts';
import { makeTinyModel } from '../../tools/make-tiny-models.ts';
import { expectClose } from './webgpu-support.ts';

const CONTEXT = Array.from({ length: 41 }, (_, i) => (i * 37 + 11) % 300);
const QUESTION = [5, 77, 123, 9, 250];
/**
 * With f32 weights on both (a software adapter) the two decodes of the same codes differ by summation order only; a
 * GPU with shader-f16 runs f16 weights, whose rounding moves logits by up to about 1e-2 on this model. A broken
 * expansion moves them by whole units.
 */
const logitTolerance = (device: string): number => (device.includes('f16 weights') ? 2e-2 : 1e-3);

describe('transform-codec objects: WebGPU engine thread vs the CPU engine', function () {
  this.timeout(180_000);
  let dir: string | undefined;
  let cpu: Engine;
  let gpu: Engine;
  let preRope: KVTensors;
  let table: TransformTable;

  before(async function () {
    const probe = await probeWebGPU();
    if (!probe.available) {
      if (process.env.CI === 'true') throw new Error(`no WebGPU adapter under CI: ${probe.reason}`);
      console.log(`      no WebGPU adapter, skipping: ${probe.reason}`);
      this.skip();
    }
    dir = await mkdtemp(join(tmpdir(), 'kdn-transform-'));
    const model = await makeTinyModel(join(dir, 'llama'), { architecture: 'LlamaForCausalLM', seed: 7 });
    cpu = await createEngine({ modelDir: model.dir, backend: 'cpu', capacity: 128 });
    gpu = await createEngineInWorker({ modelDir: model.dir, backend: 'webgpu', capacity: 128 });
    // The context's KV, its keys turned back to before RoPE, as the codec stores them.
    const session = cpu.createSession();
    await session.prefill(CONTEXT, { logits: 'none' });
    const kv = await session.exportKV({ start: 0, end: CONTEXT.length });
    session.dispose();
    const config = await loadModelConfig(model.dir);
    const back = Float64Array.from({ length: kv.tokens }, (_, t) => -t);
    for (const layer of kv.perLayer) applyRope(layer.keys, layer.keys, kv.tokens, kv.kvHeads, kv.headDim, back, ropeInvFreq(config));
    preRope = { ...kv, ropeApplied: false };
    table = fitTransformTable([preRope], cpu.info.fingerprint);
  });
  after(async () => {
    await gpu?.dispose();
    await cpu?.dispose();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  const reader = (kv: KVTensors, t: TransformTable, level: number): Promise<KVObjectReader> => {
    const codec = { name: 'transform', lz4: false, table: t.hash, level } as const;
    const bytes = encodeKVObject(kv, { modelFingerprint: cpu.info.fingerprint, tokenIds: CONTEXT, codec });
    const chunks: Buffer[] = [];
    for (let i = 0; i < bytes.length; i += 1000) chunks.push(bytes.subarray(i, i + 1000));
    const expect = { modelFingerprint: cpu.info.fingerprint, tokens: CONTEXT.length, tokenHash: tokenHash(CONTEXT) };
    return readKVObject(Readable.from(chunks), expect);
  };
  const answer = async (engine: Engine, object: KVObjectReader): Promise<Float32Array> => {
    const session = engine.createSession();
    try {
      return (await session.injectKVAndPrefill([object], QUESTION)).logits;
    } finally {
      session.dispose();
    }
  };

  it("gives the CPU engine's logits at every level of the table (within f16 or f32 weight rounding)", async () => {
    await cpu.useTransformTable(table);
    await gpu.useTransformTable(table);
    for (let level = 0; level < table.levels.length; level++) {
      const want = await answer(cpu, await reader(preRope, table, level));
      const got = await answer(gpu, await reader(preRope, table, level));
      expectClose(got, want, logitTolerance(gpu.device), 0, `level ${table.levels[level]!.name} logits`);
    }
  });

  it('refuses a table of another model (KV_MISMATCH) and fails an object whose table it was not given (KV_UNSUPPORTED)', async () => {
    const foreign = fitTransformTable([preRope], 'another-model');
    const refused = await gpu.useTransformTable(foreign).catch((e: unknown) => e);
    expect(refused).to.have.property('code', 'KV_MISMATCH');
    // Fitted on other data, so another hash; registered in this thread only, to encode with.
    const scaled = { ...preRope, perLayer: preRope.perLayer.map((l) => ({ keys: l.keys.map((x) => x * 2), values: l.values })) };
    const unknown = transformTables.register(fitTransformTable([scaled], cpu.info.fingerprint));
    const failed = await answer(gpu, await reader(preRope, unknown, 0)).catch((e: unknown) => e);
    expect(failed).to.have.property('code', 'KV_UNSUPPORTED');
  });
});
