/**
 * ForwardBackend.batchForward on both backends: one batched step over sequences at different positions (decode rows
 * of one token, and prompts of odd lengths joining) gives the logits and the KV that separate forwards give, and the
 * WebGPU batch matches the CPU reference's batch.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import type { BatchSequence, ForwardBackend, KVCacheHandle } from '../../engine-adapter/backend.ts';
import { createCpuBackend } from '../../engine-adapter/cpu/cpu-backend.ts';
import { argmax } from '../../engine-adapter/cpu/kernels/argmax.ts';
import type { Architecture } from '../../engine-adapter/model/config.ts';
import { loadModelWeights } from '../../engine-adapter/model/load-weights.ts';
import type { ModelWeights } from '../../engine-adapter/model/weights.ts';
import { createWebGPUBackend, probeWebGPU } from '../../engine-adapter/webgpu/webgpu-backend.ts';
import { makeTinyModel, type TinyModelOptions } from '../../tools/make-tiny-models.ts';
import { rejection } from '../support/rejection.ts';
import { expectClose } from './webgpu-support.ts';

/** Rows summed in another order (a matmul over more rows may tile differently) stay within this. */
const SAME_BACKEND_ATOL = 1e-4;
const GPU_VS_CPU_ATOL = 1e-4;
/** Mistral's tiny model has a 32-token window: the 37-token history crosses it. */
const ARCHS: Architecture[] = ['LlamaForCausalLM', 'MistralForCausalLM', 'Qwen2ForCausalLM', 'Qwen3ForCausalLM'];
/**
 * Each architecture's tiny model, and a Llama of 3 query heads of 16 whose 192-byte query rows put most sequences'
 * first row at an offset no binding can take (WebGPU asks 256-byte multiples), so their attention is staged.
 */
const MODELS: { name: string; options: TinyModelOptions }[] = [
  ...ARCHS.map((architecture) => ({ name: architecture, options: { architecture } })),
  {
    name: 'LlamaForCausalLM with 192-byte query rows',
    options: { architecture: 'LlamaForCausalLM', hiddenSize: 48, heads: 3, kvHeads: 1 },
  },
];

const ids = (n: number, seed: number): Uint32Array => Uint32Array.from({ length: n }, (_, i) => (i * 37 + seed * 101 + 11) % 300);

/** Each sequence: tokens already in its cache, then the rows of the batched step. */
const SEQUENCES = [
  { history: ids(7, 1), step: ids(1, 2) },
  { history: ids(37, 3), step: ids(1, 4) },
  { history: new Uint32Array(0), step: ids(13, 5) },
  { history: ids(5, 6), step: ids(3, 7) },
  { history: ids(20, 8), step: ids(1, 9) },
];

async function withHistory(backend: ForwardBackend, history: Uint32Array): Promise<KVCacheHandle> {
  const cache = backend.createKVCache(128);
  if (history.length > 0) await backend.forward(cache, history, 0, 'none');
  return cache;
}

/** The batched step's logits and the separate forwards' logits, each on fresh caches holding the histories. */
interface StepOutcome {
  batched: Float32Array[];
  separate: Float32Array[];
  /** The caches of the batched step, then those of the separate forwards. */
  caches: KVCacheHandle[][];
}

async function batchedAndSeparate(backend: ForwardBackend): Promise<StepOutcome> {
  const batchCaches: KVCacheHandle[] = [];
  const soloCaches: KVCacheHandle[] = [];
  for (const s of SEQUENCES) {
    batchCaches.push(await withHistory(backend, s.history));
    soloCaches.push(await withHistory(backend, s.history));
  }
  const batch: BatchSequence[] = SEQUENCES.map((s, i) => ({ cache: batchCaches[i]!, tokens: s.step, position: s.history.length }));
  const batched = await backend.batchForward(batch);
  const separate: Float32Array[] = [];
  for (const [i, s] of SEQUENCES.entries()) separate.push(await backend.forward(soloCaches[i]!, s.step, s.history.length, 'last'));
  return { batched, separate, caches: [batchCaches, soloCaches] };
}

function describeBackend(name: string, open: (weights: ModelWeights) => Promise<ForwardBackend>, skip: () => Promise<string | null>): void {
  describe(`batchForward on the ${name} backend`, () => {
    let dir: string;
    before(async function () {
      const reason = await skip();
      if (reason !== null) {
        if (process.env.CI === 'true') throw new Error(reason);
        console.log(`      skipping: ${reason}`);
        this.skip();
      }
      dir = await mkdtemp(join(tmpdir(), 'kdn-batch-forward-'));
    });
    after(async () => {
      if (dir) await rm(dir, { recursive: true, force: true });
    });

    for (const { name: model, options } of MODELS) {
      describe(model, () => {
        let backend: ForwardBackend;
        let cpu: ForwardBackend;
        before(async function () {
          if (!dir) this.skip();
          const tiny = await makeTinyModel(join(dir, model), { ...options, seed: 11 });
          const { weights } = await loadModelWeights(tiny.dir);
          backend = await open(weights);
          cpu = createCpuBackend(weights);
        });
        after(async () => {
          await backend?.dispose();
          await cpu?.dispose();
        });

        it('a batched step of 5 sequences at different positions gives each the logits and KV of its own forward', async () => {
          const { batched, separate, caches } = await batchedAndSeparate(backend);
          expect(batched).to.have.length(SEQUENCES.length);
          batched.forEach((logits, i) => expectClose(logits, separate[i]!, SAME_BACKEND_ATOL, 0, `sequence ${i} logits`));
          for (const [i, s] of SEQUENCES.entries()) {
            const end = s.history.length + s.step.length;
            const [b, solo] = [await backend.readKV(caches[0]![i]!, 0, end), await backend.readKV(caches[1]![i]!, 0, end)];
            b.perLayer.forEach((layer, l) => {
              expectClose(layer.keys, solo.perLayer[l]!.keys, SAME_BACKEND_ATOL, 0, `sequence ${i} layer ${l} keys`);
              expectClose(layer.values, solo.perLayer[l]!.values, SAME_BACKEND_ATOL, 0, `sequence ${i} layer ${l} values`);
            });
          }
          for (const c of caches.flat()) c.dispose();
        });

        it('greedy decoding in batched steps matches each sequence decoded alone, and the CPU reference batch', async () => {
          const { batched, caches } = await batchedAndSeparate(backend);
          const cpuCaches = await Promise.all(SEQUENCES.map((s) => withHistory(cpu, s.history)));
          const cpuFirst = SEQUENCES.map((s, i) => ({ cache: cpuCaches[i]!, tokens: s.step, position: s.history.length }));
          let cpuLogits = await cpu.batchForward(cpuFirst);
          let logits = batched;
          const positions = SEQUENCES.map((s) => s.history.length + s.step.length);
          for (let step = 0; step < 4; step++) {
            logits.forEach((l, i) => expectClose(l, cpuLogits[i]!, GPU_VS_CPU_ATOL, 0, `step ${step} sequence ${i} against the CPU batch`));
            const next = logits.map((l) => Uint32Array.of(argmax(l)));
            // Sequences leave and join between steps: the middle one sits out the odd steps.
            const active = SEQUENCES.map((_, i) => i).filter((i) => i !== 2 || step % 2 === 0);
            const solo = await Promise.all(active.map((i) => backend.forward(caches[1]![i]!, next[i]!, positions[i]!, 'last')));
            const at = (i: number, cache: KVCacheHandle): BatchSequence => ({ cache, tokens: next[i]!, position: positions[i]! });
            const stepped = await backend.batchForward(active.map((i) => at(i, caches[0]![i]!)));
            const cpuStepped = await cpu.batchForward(active.map((i) => at(i, cpuCaches[i]!)));
            stepped.forEach((l, k) => expectClose(l, solo[k]!, SAME_BACKEND_ATOL, 0, `step ${step} sequence ${active[k]}`));
            logits = logits.map((l, i) => (active.includes(i) ? stepped[active.indexOf(i)]! : l));
            cpuLogits = cpuLogits.map((l, i) => (active.includes(i) ? cpuStepped[active.indexOf(i)]! : l));
            for (const i of active) positions[i]!++;
          }
          for (const c of [...caches.flat(), ...cpuCaches]) c.dispose();
        });

        it('refuses a batch naming one cache twice, or a sequence with no tokens, with INVALID_ARGUMENT', async () => {
          const cache = backend.createKVCache(16);
          const other = backend.createKVCache(16);
          const twice = backend.batchForward([
            { cache, tokens: ids(1, 1), position: 0 },
            { cache, tokens: ids(1, 2), position: 1 },
          ]);
          expect((await rejection(twice)).code).to.equal('INVALID_ARGUMENT');
          const empty = backend.batchForward([
            { cache, tokens: ids(1, 1), position: 0 },
            { cache: other, tokens: new Uint32Array(0), position: 0 },
          ]);
          expect((await rejection(empty)).code).to.equal('INVALID_ARGUMENT');
          cache.dispose();
          other.dispose();
        });
      });
    }
  });
}

describeBackend(
  'cpu',
  async (weights) => createCpuBackend(weights),
  async () => null,
);
// Chunks of 16 rows: the 19-row first step and its history prefills cross group and chunk boundaries.
describeBackend(
  'webgpu',
  (weights) => createWebGPUBackend(weights, { weights: 'f32', maxChunkTokens: 16 }),
  async () => {
    const probe = await probeWebGPU();
    return probe.available ? null : `no WebGPU adapter: ${probe.reason}`;
  },
);
