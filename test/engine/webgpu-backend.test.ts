/**
 * The WebGPU backend against the CPU reference backend on the tiny random-weight models of every architecture:
 * prefill logits, 16 greedy steps, KV export, and injection (exact for a prefix, re-rotated at another position).
 * The f16-weight path is compared with the CPU backend running the same weights rounded to f16.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import type { BlendSignals, ForwardBackend, KVCacheHandle } from '../../engine-adapter/backend.ts';
import { createCpuBackend } from '../../engine-adapter/cpu/cpu-backend.ts';
import { argmax } from '../../engine-adapter/cpu/kernels/argmax.ts';
import { LayerGates } from '../../engine-adapter/layer-gates.ts';
import { loadModelWeights } from '../../engine-adapter/model/load-weights.ts';
import type { Architecture, ModelConfig } from '../../engine-adapter/model/config.ts';
import { applyRope, ropeInvFreq } from '../../engine-adapter/cpu/kernels/rope.ts';
import { createWebGPUBackend, probeWebGPU } from '../../engine-adapter/webgpu/webgpu-backend.ts';
import { codecFor } from '../../storage/kv-object/codecs/index.ts';
import type { CodecSpec, KVHeader, KVLayerBlock, KVTensors } from '../../storage/kv-object/types.ts';
import { makeTinyModel } from '../../tools/make-tiny-models.ts';
import { expectClose, roundWeightsToF16 } from './webgpu-support.ts';

/** Logits of the tiny models reach about 7; f32 kernels summing in another order stay within 1e-4. */
const LOGIT_ATOL = 1e-4;
const KV_ATOL = 1e-5;
/** Keys re-rotated by a few hundred positions on each backend (f32 angles on the GPU). */
const MOVED_KEY_ATOL = 1e-4;
/** Injected KV is fp16 (the format has no f32 codec): logits against a full prefill move by its rounding. */
const FP16_INJECT_LOGIT_ATOL = 1e-2;
const FP16_KEY_ATOL = 2e-3;
/**
 * Where the adapter has tensor cores (subgroup matrices), f16-weight products and prefill attention also round
 * their activation inputs to f16: logits and exported KV then move by about that rounding (2^-11 relative, summed
 * over the layers; at logits near 7 one f16 step is already 2^-8 = 0.004).
 */
const TENSOR_ATOL = 2e-2;
const FP16: CodecSpec = { name: 'fp16', lz4: false };
const QUANTIZED: CodecSpec[] = [
  { name: 'int8', lz4: false, groupSize: 32 },
  { name: 'int4', lz4: false, groupSize: 5 },
];
const PROMPT = Uint32Array.from({ length: 41 }, (_, i) => (i * 37 + 11) % 300);
/** The token a blended query's context starts with (kdn/sink-token.ts). */
const SINK = 1;

async function greedy(backend: ForwardBackend, cache: KVCacheHandle, prompt: Uint32Array, steps: number): Promise<number[]> {
  let logits = await backend.forward(cache, prompt, 0, 'last');
  const out: number[] = [];
  for (let i = 0; i < steps; i++) {
    const next = argmax(logits);
    out.push(next);
    logits = await backend.forward(cache, Uint32Array.of(next), prompt.length + i, 'last');
  }
  return out;
}

function header(kv: KVTensors, positionBase: number, ropeApplied: boolean, codec: CodecSpec = FP16): KVHeader {
  return {
    version: 1,
    modelFingerprint: 'test',
    layers: kv.layers,
    kvHeads: kv.kvHeads,
    headDim: kv.headDim,
    tokens: kv.tokens,
    tokenHash: '',
    positionBase,
    ropeApplied,
    codec,
    layerOffsets: [],
    layerChecksums: [],
    payloadChecksum: '',
  };
}

/** Layer blocks encoded with the header's codec: the webgpu backend expands `encoded`, the CPU one decodes. */
function blocks(kv: KVTensors, h: KVHeader): KVLayerBlock[] {
  const codec = codecFor(h.codec);
  const shape = { tokens: kv.tokens, kvHeads: kv.kvHeads, headDim: kv.headDim };
  return kv.perLayer.map((t, layer) => {
    const encoded = codec.encode(t, shape);
    return { layer, encoded, decode: () => codec.decode(encoded, shape) };
  });
}

async function inject(backend: ForwardBackend, cache: KVCacheHandle, kv: KVTensors, h: KVHeader, position: number): Promise<void> {
  for (const block of blocks(kv, h)) await backend.writeKVLayer(cache, h, block, position);
}

const CASES: { arch: Architecture; precision: 'f32' | 'f16' }[] = [
  { arch: 'LlamaForCausalLM', precision: 'f32' },
  { arch: 'MistralForCausalLM', precision: 'f32' },
  { arch: 'Qwen2ForCausalLM', precision: 'f32' },
  { arch: 'Qwen3ForCausalLM', precision: 'f32' },
  { arch: 'LlamaForCausalLM', precision: 'f16' },
  { arch: 'Qwen3ForCausalLM', precision: 'f16' },
];

describe('webgpu backend vs the CPU backend on tiny models', () => {
  let dir: string;

  before(async function () {
    const probe = await probeWebGPU();
    if (!probe.available) {
      if (process.env.CI === 'true') throw new Error(`no WebGPU adapter under CI: ${probe.reason}`);
      console.log(`      no WebGPU adapter, skipping: ${probe.reason}`);
      this.skip();
    }
    dir = await mkdtemp(join(tmpdir(), 'kdn-webgpu-'));
  });
  after(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  for (const { arch, precision } of CASES) {
    describe(`${arch}, ${precision} weights`, () => {
      let gpu: ForwardBackend;
      let cpu: ForwardBackend;
      let weightsConfig: ModelConfig;

      before(async function () {
        if (!dir) this.skip();
        const model = await makeTinyModel(join(dir, `${arch}-${precision}`), { architecture: arch, seed: 7 });
        const { weights } = await loadModelWeights(model.dir);
        weightsConfig = weights.config;
        // Chunks of 16 tokens make the 41-token prompt cross chunk boundaries (and Mistral's 32-token window).
        gpu = await createWebGPUBackend(weights, { weights: precision, maxChunkTokens: 16 });
        cpu = createCpuBackend(precision === 'f16' ? roundWeightsToF16(weights) : weights);
      });
      after(async () => {
        await gpu?.dispose();
        await cpu?.dispose();
      });

      /** Tolerances of this adapter's path: tight for f32 activations, TENSOR_ATOL where tensor cores round them. */
      const tol = (): { logits: number; kv: number } =>
        gpu.device.includes('tensor cores') ? { logits: TENSOR_ATOL, kv: TENSOR_ATOL } : { logits: LOGIT_ATOL, kv: KV_ATOL };

      it(`prefill logits of all 41 tokens match (atol ${LOGIT_ATOL}, ${TENSOR_ATOL} on tensor cores) and the KV export matches (atol ${KV_ATOL})`, async () => {
        const g = gpu.createKVCache(64);
        const c = cpu.createKVCache(64);
        const worst = expectClose(
          await gpu.forward(g, PROMPT, 0, 'all'),
          await cpu.forward(c, PROMPT, 0, 'all'),
          tol().logits,
          0,
          'logits',
        );
        console.log(`      ${gpu.device}: worst logit difference ${worst.toExponential(2)}`);
        const [kg, kc] = [await gpu.readKV(g, 3, 41), await cpu.readKV(c, 3, 41)];
        expect({ ...kg, perLayer: [] }).to.deep.equal({ ...kc, perLayer: [] });
        kg.perLayer.forEach((t, l) => {
          expectClose(t.keys, kc.perLayer[l]!.keys, tol().kv, 1e-4, `layer ${l} keys`);
          expectClose(t.values, kc.perLayer[l]!.values, tol().kv, 1e-4, `layer ${l} values`);
        });
        g.dispose();
      });

      it("a cache on a disposed session's pooled buffers computes like a fresh one (stale rows are never read)", async () => {
        const first = gpu.createKVCache(48);
        await gpu.reserveKV(first, 48);
        await gpu.forward(first, PROMPT, 0, 'none');
        first.dispose();
        const reused = gpu.createKVCache(48);
        await gpu.reserveKV(reused, 48);
        const short = PROMPT.subarray(20, 29);
        const got = await gpu.forward(reused, short, 0, 'all');
        const reference = cpu.createKVCache(48);
        expectClose(got, await cpu.forward(reference, short, 0, 'all'), tol().logits, 0, 'logits');
        expect((await gpu.readKV(reused, 0, short.length)).tokens).to.equal(short.length);
        reused.dispose();
      });

      it('rejects bad input with typed errors', async () => {
        const cache = gpu.createKVCache(16);
        const code = async (p: Promise<unknown>): Promise<string> =>
          p.then(
            () => 'resolved',
            (e: { code?: string }) => e.code ?? String(e),
          );
        expect(await code(gpu.forward(cache, Uint32Array.of(1, 2), 15, 'last'))).to.equal('CONTEXT_TOO_LONG');
        expect(await code(gpu.forward(cache, Uint32Array.of(1, 99999), 0, 'last'))).to.equal('INVALID_ARGUMENT');
        expect(await code(gpu.forward(cache, new Uint32Array(0), 0, 'last'))).to.equal('INVALID_ARGUMENT');
        const kv = await gpu.readKV(cache, 0, 2);
        const wrong = { ...header(kv, 0, true), kvHeads: kv.kvHeads + 1 };
        expect(await code(gpu.writeKVLayer(cache, wrong, blocks(kv, header(kv, 0, true))[0]!, 0))).to.equal('KV_MISMATCH');
        expect(await code(gpu.writeKVLayer(cache, header(kv, 0, true), { ...blocks(kv, header(kv, 0, true))[0]!, layer: 99 }, 0))).to.equal(
          'KV_MISMATCH',
        );
        cache.dispose();
        expect(await code(gpu.forward(cache, Uint32Array.of(1), 0, 'last'))).to.equal('INVALID_ARGUMENT');
      });

      it('gives the same 16 greedy tokens', async () => {
        const prompt = PROMPT.subarray(0, 9);
        const fromGpu = await greedy(gpu, gpu.createKVCache(32), prompt, 16);
        const fromCpu = await greedy(cpu, cpu.createKVCache(32), prompt, 16);
        expect(fromGpu).to.deep.equal(fromCpu);
      });

      it(`injecting the exported fp16 KV of a prefix gives the CPU backend's logits (atol ${LOGIT_ATOL}) and the full prefill's (atol ${FP16_INJECT_LOGIT_ATOL})`, async () => {
        const [a, b] = [PROMPT.subarray(0, 25), PROMPT.subarray(25)];
        const full = gpu.createKVCache(64);
        const expected = await gpu.forward(full, PROMPT, 0, 'all');
        const kv = await gpu.readKV(full, 0, a.length);
        const injected = gpu.createKVCache(64);
        // Reserved up front, as a query does: the injected rows land in the cache's only allocation.
        await gpu.reserveKV(injected, 64);
        const [gpuBefore, cpuBefore] = [gpu.kvWrites(), cpu.kvWrites()];
        await inject(gpu, injected, kv, header(kv, 0, true), 0);
        const got = await gpu.forward(injected, b, a.length, 'all');
        const reference = cpu.createKVCache(64);
        await inject(cpu, reference, kv, header(kv, 0, true), 0);
        // Both count the blocks and their bytes; the GPU's forward submitted what the writes staged.
        const bytes = blocks(kv, header(kv, 0, true)).reduce((n, block) => n + block.encoded.length, 0);
        for (const [after, before] of [
          [gpu.kvWrites(), gpuBefore],
          [cpu.kvWrites(), cpuBefore],
        ] as const) {
          expect(after.blocks - before.blocks).to.equal(weightsConfig.layers);
          expect(after.bytes - before.bytes).to.equal(bytes);
          expect(after.stageSeconds).to.be.greaterThan(before.stageSeconds);
        }
        expect(gpu.kvWrites().submitSeconds).to.be.greaterThan(gpuBefore.submitSeconds);
        expect(gpu.kvWrites().submits).to.be.greaterThan(gpuBefore.submits);
        // One dequantization (fp16 here) per layer at least; the keys were stored rotated at their position.
        expect(gpu.kvWrites().dispatches - gpuBefore.dispatches).to.be.at.least(weightsConfig.layers);
        expectClose(got, await cpu.forward(reference, b, a.length, 'all'), tol().logits, 0, 'logits vs cpu');
        // Both roundings at once on tensor cores: the injected KV's fp16 and the activations'.
        const vsPrefill = FP16_INJECT_LOGIT_ATOL + (tol().logits === TENSOR_ATOL ? TENSOR_ATOL : 0);
        expectClose(got, expected.subarray(a.length * (expected.length / PROMPT.length)), vsPrefill, 0, 'logits vs prefill');
      });

      it('a forward gated on a context still arriving equals the forward after it arrived; a failed gate ends it with that error', async () => {
        // 21 prompt tokens after a 20-token context: two chunks of 16, only the first of which waits on the gates.
        const [a, b] = [PROMPT.subarray(0, 20), PROMPT.subarray(20)];
        const source = gpu.createKVCache(64);
        await gpu.forward(source, a, 0, 'none');
        const kv = await gpu.readKV(source, 0, a.length);
        const h = header(kv, 0, true);
        const before = gpu.createKVCache(64);
        await gpu.reserveKV(before, 64);
        await inject(gpu, before, kv, h, 0);
        const want = await gpu.forward(before, b, a.length, 'all');

        const arriving = gpu.createKVCache(64);
        await gpu.reserveKV(arriving, 64);
        let flushes = 0;
        const gates = new LayerGates(weightsConfig.layers, () => {
          flushes++;
          gpu.flushKVWrites(arriving);
        });
        const opened: number[] = [];
        const running = gpu.forward(arriving, b, a.length, 'all', async (layer) => {
          const ready = await gates.wait(layer);
          opened.push(layer);
          return ready;
        });
        for (const block of blocks(kv, h)) {
          await new Promise((resolve) => setTimeout(resolve, 5));
          await gpu.writeKVLayer(arriving, h, block, 0);
          gates.setWritten(block.layer + 1);
        }
        expectClose(await running, want, 0, 0, 'gated logits');
        expect(opened).to.deep.equal(Array.from({ length: weightsConfig.layers }, (_, l) => l));
        // Each layer was waited on before it was written, so each was flushed on its own.
        expect(flushes).to.equal(weightsConfig.layers);

        // Gates that hold out for every layer: the forward asks once and runs the whole chunk in one piece.
        const together = gpu.createKVCache(64);
        await gpu.reserveKV(together, 64);
        const whole = new LayerGates(weightsConfig.layers, () => gpu.flushKVWrites(together), weightsConfig.layers);
        const asked: number[] = [];
        const runningWhole = gpu.forward(together, b, a.length, 'all', (layer) => {
          asked.push(layer);
          return whole.wait(layer);
        });
        for (const block of blocks(kv, h)) {
          await new Promise((resolve) => setTimeout(resolve, 5));
          await gpu.writeKVLayer(together, h, block, 0);
          whole.setWritten(block.layer + 1);
        }
        expectClose(await runningWhole, want, 0, 0, 'logits of a forward gated in one piece');
        expect(asked).to.deep.equal([0]);

        const failing = new LayerGates(weightsConfig.layers);
        const failed = gpu.forward(gpu.createKVCache(64), b, a.length, 'last', (layer) => failing.wait(layer));
        failing.setWritten(1);
        failing.fail(new Error('object stream reset'));
        expect(
          await failed.then(
            () => null,
            (e: unknown) => (e as Error).message,
          ),
        ).to.equal('object stream reset');
        // The backend goes on computing as before.
        expectClose(await gpu.forward(before, b, a.length, 'all'), want, 0, 0, 'logits after a failed gate');
      });

      it('expands int8 and int4 blocks on the GPU like the codec decodes them on the CPU, at an offset', async () => {
        const source = gpu.createKVCache(32);
        await gpu.forward(source, PROMPT.subarray(0, 13), 0, 'none');
        const kv = await gpu.readKV(source, 0, 13);
        for (const codec of QUANTIZED) {
          const h = header(kv, 3, true, codec);
          const placed = gpu.createKVCache(32);
          await inject(gpu, placed, kv, { ...h, positionBase: 3 }, 3);
          const got = await gpu.readKV(placed, 3, 16);
          blocks(kv, h).forEach((block, l) => {
            const want = block.decode();
            expectClose(got.perLayer[l]!.keys, want.keys, KV_ATOL, 1e-5, `${codec.name} layer ${l} keys`);
            expectClose(got.perLayer[l]!.values, want.values, KV_ATOL, 1e-5, `${codec.name} layer ${l} values`);
          });
        }
      });

      it('rejects a layer block of the wrong size', async () => {
        const cache = gpu.createKVCache(16);
        await gpu.forward(cache, PROMPT.subarray(0, 4), 0, 'none');
        const kv = await gpu.readKV(cache, 0, 4);
        const h = header(kv, 0, true);
        const [block] = blocks(kv, h);
        const err = await gpu.writeKVLayer(cache, h, { ...block!, encoded: block!.encoded.subarray(4) }, 0).catch((e: unknown) => e);
        expect(err).to.have.property('code', 'KV_CORRUPT');
      });

      it('many chunks in a row, of mixed codecs and moved positions, into a cache growing meanwhile, land as on the CPU backend', async () => {
        const source = gpu.createKVCache(64);
        await gpu.forward(source, PROMPT, 0, 'none');
        const kv = await gpu.readKV(source, 0, PROMPT.length);
        const codecs = [FP16, ...QUANTIZED];
        // 9 x 41 tokens: the cache outgrows its first allocation (256 tokens) while blocks wait to be expanded.
        const count = 9;
        const end = count * kv.tokens;
        const placed = gpu.createKVCache(end);
        const reference = cpu.createKVCache(end);
        for (let i = 0; i < count; i++) {
          // Each chunk its own bytes: blocks batched together must each be read from their own place.
          const scale = 1 + i / 8;
          const chunk = {
            ...kv,
            perLayer: kv.perLayer.map((t) => ({ keys: t.keys.map((x) => x * scale), values: t.values.map((x) => x * scale) })),
          };
          const h = header(chunk, 0, true, codecs[i % codecs.length]);
          await inject(gpu, placed, chunk, h, i * kv.tokens);
          await inject(cpu, reference, chunk, h, i * kv.tokens);
        }
        const [got, want] = [await gpu.readKV(placed, 0, end), await cpu.readKV(reference, 0, end)];
        got.perLayer.forEach((t, l) => {
          // Moved by up to 328 positions: the f32 angle alone is off by up to 328 * 2^-24 rad, on keys of O(1).
          expectClose(t.keys, want.perLayer[l]!.keys, MOVED_KEY_ATOL, 1e-4, `layer ${l} keys`);
          expectClose(t.values, want.perLayer[l]!.values, KV_ATOL, 1e-5, `layer ${l} values`);
        });
      });

      /**
       * Two chunks computed alone, injected at 0 and 20 on each backend (the second re-rotated), then a blended
       * forward of their 40 tokens and a 1-token prompt: 41 rows crossing the 16-row chunks of both phases.
       */
      const blendOnBoth = async (
        plan: (cpu: BlendSignals | null, layer: number, candidates: Uint32Array) => Uint32Array,
        checkLayer: number | null,
        massRows = 0,
        narrows = false,
        on: { gpu: ForwardBackend; cpu: ForwardBackend } = { gpu, cpu },
      ) => {
        // After a sink token at 0, as a query holds them: the rows sit at 1.., not at 0.
        const tokens = PROMPT;
        const caches = { gpu: on.gpu.createKVCache(64), cpu: on.cpu.createKVCache(64) };
        await on.gpu.forward(caches.gpu, Uint32Array.of(SINK), 0, 'none');
        await on.cpu.forward(caches.cpu, Uint32Array.of(SINK), 0, 'none');
        for (const [start, end] of [
          [0, 20],
          [20, 40],
        ] as const) {
          const alone = on.gpu.createKVCache(32);
          await on.gpu.forward(alone, Uint32Array.of(SINK, ...tokens.subarray(start, end)), 0, 'none');
          const kv = await on.gpu.readKV(alone, 1, 1 + end - start);
          alone.dispose();
          await inject(on.gpu, caches.gpu, kv, header(kv, 1, true), 1 + start);
          await inject(on.cpu, caches.cpu, kv, header(kv, 1, true), 1 + start);
        }
        // The signals and rows of each selecting layer, by backend.
        const seen = { cpu: new Map<number, BlendSignals | null>(), gpu: new Map<number, BlendSignals | null>() };
        const picked = new Map<number, Uint32Array>();
        const cpuPlan = { checkLayer, massRows, narrows };
        const want = await on.cpu.blendForward(
          caches.cpu,
          tokens,
          1,
          {
            ...cpuPlan,
            select: (d, layer, candidates) => {
              seen.cpu.set(layer, d);
              const rows = plan(d, layer, candidates);
              picked.set(layer, rows);
              return rows;
            },
          },
          'last',
        );
        // The GPU takes the CPU's rows, so near-ties in the signals cannot make the two recompute different rows.
        const got = await on.gpu.blendForward(
          caches.gpu,
          tokens,
          1,
          {
            ...cpuPlan,
            select: (d, layer) => {
              seen.gpu.set(layer, d);
              return picked.get(layer)!;
            },
          },
          'last',
        );
        return { got, want, cpuSignals: seen.cpu.get(checkLayer ?? 0)!, gpuSignals: seen.gpu.get(checkLayer ?? 0)!, seen, caches };
      };

      it("a blended forward (signals at layer 1, then 7 rows) gives the CPU backend's deviations, prompt attention, logits and KV", async () => {
        const topRows = (signals: BlendSignals | null): Uint32Array => {
          const d = signals!.deviation;
          const order = Array.from({ length: 40 }, (_, r) => r).sort((x, y) => d[y]! - d[x]!);
          return Uint32Array.from([...order.slice(0, 6).sort((x, y) => x - y), 40]);
        };
        // The last 3 rows weigh the others by their attention.
        const { got, want, cpuSignals, gpuSignals, caches } = await blendOnBoth(topRows, 1, 3);
        expect(got.rows).to.deep.equal(want.rows);
        // The first chunk sits where it was computed: its K/V did not move (the second chunk's did).
        expect(cpuSignals!.deviation.subarray(0, 20).every((d) => d < 1e-3)).to.equal(true);
        // The prompt row's slot held no injected KV (stale rows of a pooled buffer on the GPU): only the context's count.
        expectClose(gpuSignals!.deviation.subarray(0, 40), cpuSignals!.deviation.subarray(0, 40), tol().kv, 1e-3, 'deviation');
        const mass = cpuSignals!.mass!;
        expect(mass).to.have.length(41);
        // A share of each row's attention, summed over the rows and heads and divided by them: at most 1 (less what the
        // sink before the rows takes, where Mistral's window still reaches it).
        expect(mass.reduce((a, b) => a + b, 0)).to.be.within(0.01, 1 + 1e-5);
        expectClose(gpuSignals!.mass!, mass, tol().kv, 1e-3, 'prompt attention');
        expectClose(got.logits, want.logits, tol().logits, 0, 'logits');
        const [kg, kc] = [await gpu.readKV(caches.gpu, 0, 42), await cpu.readKV(caches.cpu, 0, 42)];
        kg.perLayer.forEach((t, l) => {
          // Injected rows were re-rotated on each backend: as exact as MOVED_KEY_ATOL, besides the recompute's rounding.
          expectClose(t.keys, kc.perLayer[l]!.keys, tol().kv + MOVED_KEY_ATOL, 1e-4, `layer ${l} keys`);
          expectClose(t.values, kc.perLayer[l]!.values, tol().kv, 1e-4, `layer ${l} values`);
        });
      });

      it("a gradual blended forward of 4 layers (11 rows and the last 3 at layer 1, 2 fewer at each layer after it) gives the CPU backend's signals at every layer, logits and KV", async () => {
        // Four layers, so that three select.
        const model = await makeTinyModel(join(dir, `${arch}-${precision}-deep`), { architecture: arch, seed: 7, layers: 4 });
        const { weights } = await loadModelWeights(model.dir);
        const deep = {
          gpu: await createWebGPUBackend(weights, { weights: precision, maxChunkTokens: 16 }),
          cpu: createCpuBackend(precision === 'f16' ? roundWeightsToF16(weights) : weights),
        };
        // The largest deviations of the rows still running, fewer at each layer; the last 3 rows, whose attention
        // weighs the others, always (as a prompt's rows).
        const narrowing = (signals: BlendSignals | null, layer: number, candidates: Uint32Array): Uint32Array => {
          const d = signals!.deviation;
          const context = [...candidates].filter((r) => r < 38).sort((x, y) => d[y]! - d[x]!);
          return Uint32Array.from([...context.slice(0, 13 - 2 * layer).sort((x, y) => x - y), 38, 39, 40]);
        };
        try {
          await gradualOnBoth(await blendOnBoth(narrowing, 1, 3, true, deep), deep);
        } finally {
          await deep.gpu.dispose();
          await deep.cpu.dispose();
        }
      });

      /** A gradual blend's outcome on both backends: every layer from 1 selected, the same signals, logits and KV. */
      const gradualOnBoth = async (
        { got, want, seen, caches }: Awaited<ReturnType<typeof blendOnBoth>>,
        on: { gpu: ForwardBackend; cpu: ForwardBackend },
      ): Promise<void> => {
        expect([...seen.cpu.keys()]).to.deep.equal([1, 2, 3]);
        // 11, 9 and 7 rows and the last 3 ran layers 1 to 3 (layer 0, before the check layer, ran every row).
        expect(want.meanRows).to.be.closeTo((11 + 9 + 7) / 3 + 3, 1e-9);
        expect([...seen.gpu.keys()]).to.deep.equal([...seen.cpu.keys()]);
        expect(got.rows).to.deep.equal(want.rows);
        expect(got.meanRows).to.be.closeTo(want.meanRows, 1e-9);
        for (const [layer, cpuSignals] of seen.cpu) {
          const gpuSignals = seen.gpu.get(layer)!;
          expectClose(
            gpuSignals.deviation.subarray(0, 38),
            cpuSignals!.deviation.subarray(0, 38),
            tol().kv,
            1e-3,
            `layer ${layer} deviation`,
          );
          expectClose(gpuSignals.mass!, cpuSignals!.mass!, tol().kv, 1e-3, `layer ${layer} prompt attention`);
        }
        expectClose(got.logits, want.logits, tol().logits, 0, 'logits');
        const [kg, kc] = [await on.gpu.readKV(caches.gpu, 0, 42), await on.cpu.readKV(caches.cpu, 0, 42)];
        kg.perLayer.forEach((t, l) => {
          expectClose(t.keys, kc.perLayer[l]!.keys, tol().kv + MOVED_KEY_ATOL, 1e-4, `layer ${l} keys`);
          expectClose(t.values, kc.perLayer[l]!.values, tol().kv, 1e-4, `layer ${l} values`);
        });
      };

      it("a blended forward with a static selection (no check layer) gives the CPU backend's logits; every row recomputed equals a prefill", async () => {
        const starts = (): Uint32Array => Uint32Array.of(0, 1, 20, 21, 22, 40);
        const { got, want, cpuSignals } = await blendOnBoth(starts, null);
        expect(cpuSignals).to.equal(null);
        expect(got.rows).to.deep.equal(starts());
        expectClose(got.logits, want.logits, tol().logits, 0, 'logits');
        const all = (): Uint32Array => Uint32Array.from({ length: 41 }, (_, r) => r);
        const everything = await blendOnBoth(all, null);
        const prefill = await gpu.forward(gpu.createKVCache(64), Uint32Array.of(SINK, ...PROMPT), 0, 'last');
        expectClose(everything.got.logits, prefill, tol().logits, 0, 'every row recomputed vs prefill');
      });

      it('re-rotates injected keys like the CPU backend, and pre-RoPE keys get RoPE at their position', async () => {
        const chunk = PROMPT.subarray(30, 41);
        const prefix = PROMPT.subarray(0, 5);
        // The chunk's KV computed alone at position 0, placed after a 5-token prefix.
        const alone = gpu.createKVCache(32);
        await gpu.forward(alone, chunk, 0, 'none');
        const kv = await gpu.readKV(alone, 0, chunk.length);
        const placed = gpu.createKVCache(32);
        const reference = cpu.createKVCache(32);
        await gpu.forward(placed, prefix, 0, 'none');
        await cpu.forward(reference, prefix, 0, 'none');
        await inject(gpu, placed, kv, header(kv, 0, true), prefix.length);
        await inject(cpu, reference, kv, header(kv, 0, true), prefix.length);
        const [got, want] = [await gpu.readKV(placed, 0, 16), await cpu.readKV(reference, 0, 16)];
        // The prefix rows were computed by each backend (tensor cores round activations); the moved rows are the
        // same fp16 keys re-rotated on each, so they agree as closely as f32 rotations do.
        const split = prefix.length * kv.kvHeads * kv.headDim;
        got.perLayer.forEach((t, l) => {
          expectClose(t.keys.subarray(0, split), want.perLayer[l]!.keys.subarray(0, split), tol().kv, 1e-4, `layer ${l} prefix keys`);
          expectClose(t.keys.subarray(split), want.perLayer[l]!.keys.subarray(split), KV_ATOL, 1e-4, `layer ${l} moved keys`);
        });
        // Layer 0 keys depend only on token and position: moved keys equal keys computed in place at 5..16.
        const inPlace = gpu.createKVCache(32);
        await gpu.forward(inPlace, PROMPT.subarray(0, 5), 0, 'none');
        await gpu.forward(inPlace, chunk, 5, 'none');
        const direct = await gpu.readKV(inPlace, 5, 16);
        // The moved keys went through fp16 (error up to 2^-11 of the rotated pair's magnitude, keys here O(1)).
        expectClose(
          got.perLayer[0]!.keys.subarray(5 * direct.kvHeads * direct.headDim),
          direct.perLayer[0]!.keys,
          FP16_KEY_ATOL,
          0,
          'moved layer 0 keys',
        );
        // Keys stored before RoPE (rotated back by -t on the host) get RoPE at their placed positions 5..16.
        const preRope: KVTensors = {
          ...kv,
          ropeApplied: false,
          perLayer: kv.perLayer.map((t) => {
            const keys = new Float32Array(t.keys.length);
            const back = Array.from({ length: kv.tokens }, (_, i) => -i);
            applyRope(keys, t.keys, kv.tokens, kv.kvHeads, kv.headDim, back, ropeInvFreq(weightsConfig));
            return { keys, values: t.values };
          }),
        };
        const fromPre = gpu.createKVCache(32);
        await gpu.forward(fromPre, prefix, 0, 'none');
        await inject(gpu, fromPre, preRope, header(preRope, 0, false), prefix.length);
        const fromPreCpu = cpu.createKVCache(32);
        await cpu.forward(fromPreCpu, prefix, 0, 'none');
        await inject(cpu, fromPreCpu, preRope, header(preRope, 0, false), prefix.length);
        const wantPre = await cpu.readKV(fromPreCpu, 0, 16);
        const rotated = await gpu.readKV(fromPre, 0, 16);
        rotated.perLayer.forEach((t, l) => {
          expectClose(
            t.keys.subarray(0, split),
            wantPre.perLayer[l]!.keys.subarray(0, split),
            tol().kv,
            1e-4,
            `layer ${l} prefix keys (pre-RoPE case)`,
          );
          expectClose(
            t.keys.subarray(split),
            wantPre.perLayer[l]!.keys.subarray(split),
            2 * KV_ATOL,
            1e-4,
            `layer ${l} keys from pre-RoPE`,
          );
        });
      });
    });
  }
});
