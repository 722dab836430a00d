/**
 * Stacked projections (engine-adapter/webgpu/stacked-matrix.ts, kernels/matmul-stacked.ts) against the CPU reference:
 * q, k and v, and gate and up through SwiGLU, as one split product and part by part, each part's rows a view of the
 * stack; q, k and v with RoPE and the KV write done in the reduction; when a stack cannot share one buffer; and whole
 * forwards whose projections split.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import { createCpuBackend } from '../../engine-adapter/cpu/cpu-backend.ts';
import { matmul } from '../../engine-adapter/cpu/kernels/matmul.ts';
import { applyRope, ropeInvFreq } from '../../engine-adapter/cpu/kernels/rope.ts';
import { loadModelWeights } from '../../engine-adapter/model/load-weights.ts';
import { swiglu } from '../../engine-adapter/cpu/kernels/swiglu.ts';
import type { GpuContext, Recorder } from '../../engine-adapter/webgpu/gpu-context.ts';
import { uploadMatrixF16, type MatrixLayout } from '../../engine-adapter/webgpu/gpu-matrix.ts';
import { planMatmul } from '../../engine-adapter/webgpu/kernels/matmul.ts';
import { planStacked, recordQkvIntoCache, recordStackedMatmul } from '../../engine-adapter/webgpu/kernels/matmul-stacked.ts';
import { uploadStackedF16, type StackedMatrix } from '../../engine-adapter/webgpu/stacked-matrix.ts';
import { createWebGPUBackend } from '../../engine-adapter/webgpu/webgpu-backend.ts';
import { makeTinyModel } from '../../tools/make-tiny-models.ts';
import { expectClose, f16RoundArray, openContextOrSkip, randomArray, roundWeightsToF16 } from './webgpu-support.ts';

describe('stacked projections vs the CPU reference', () => {
  let ctx: GpuContext;

  before(async function () {
    ctx = await openContextOrSkip(this);
  });
  after(() => ctx?.dispose());

  const upload = (data: Float32Array): GPUBuffer => ctx.upload(data, 'test input');
  const read = async (record: (rec: Recorder) => void, outs: { buffer: GPUBuffer; floats: number }[]): Promise<Float32Array[]> => {
    const rec = ctx.recorder();
    record(rec);
    for (const o of outs) rec.readback(o.buffer, 0, o.floats * 4);
    return (await rec.submit()).map((b) => new Float32Array(b));
  };

  /** Random parts of width k, stacked (or each its own buffer with `separate`), with biases where `bias`. */
  async function stackOf(
    rows: number[],
    k: number,
    o: { layout: MatrixLayout; bias: boolean; separate?: boolean; seed: number },
  ): Promise<{ w: StackedMatrix; data: Float32Array[]; biases: Float32Array[] }> {
    const data = rows.map((r, i) => randomArray(r * k, o.seed + i, 0.5));
    const biases = rows.map((r, i) => randomArray(r, o.seed + 10 + i));
    const tensors = rows.map((r, i) => ({ shape: [r, k], data: data[i]! }));
    const bias = (i: number): GPUBuffer | undefined => (o.bias ? upload(biases[i]!) : undefined);
    if (o.separate) {
      const parts = await Promise.all(tensors.map(async (t, i) => ({ w: await uploadMatrixF16(ctx, t, 'part', o.layout), bias: bias(i) })));
      return { w: { whole: null, parts }, data, biases };
    }
    const up = await uploadStackedF16(ctx, tensors, 'stack', o.layout);
    expect(up, 'the parts stack').to.not.equal(null);
    const whole = o.bias ? upload(Float32Array.from(biases.flatMap((b) => [...b]))) : undefined;
    return { w: { whole: { w: up!.whole, bias: whole }, parts: up!.parts.map((w, i) => ({ w, bias: bias(i) })) }, data, biases };
  }

  /** x W_i^T (+ b_i) on the CPU, W_i rounded to f16 as the GPU holds it (and x too where `roundX`: the tensor cores read it so). */
  function reference(x: Float32Array, m: number, k: number, w: Float32Array, b: Float32Array | undefined, roundX: boolean): Float32Array {
    const n = w.length / k;
    const out = new Float32Array(m * n);
    matmul(out, roundX ? f16RoundArray(x) : x, f16RoundArray(w), m, k, n, b);
    return out;
  }

  /** q, k and v stacked: each to its own buffer, as three products on the CPU. */
  async function checkColumns(
    s: { m: number; k: number; rows: [number, number, number]; kParts?: number },
    o: Parameters<typeof stackOf>[2],
    tol: [number, number],
  ): Promise<void> {
    const { m, k, rows } = s;
    const { w, data, biases } = await stackOf(rows, k, o);
    const x = randomArray(m * k, o.seed + 20);
    const ys = rows.map((r) => ctx.storage(m * r * 4, 'y')) as [GPUBuffer, GPUBuffer, GPUBuffer];
    const got = await read(
      (rec) => recordStackedMatmul(ctx, rec, { x: upload(x), w, m, kParts: s.kParts, out: { kind: 'columns', ys } }),
      ys.map((buffer, i) => ({ buffer, floats: m * rows[i]! })),
    );
    const roundX = ctx.features.subgroupMatrix !== null;
    rows.forEach((_, i) =>
      expectClose(got[i]!, reference(x, m, k, data[i]!, o.bias ? biases[i] : undefined, roundX), tol[0], tol[1], `part ${i}`),
    );
  }

  /** gate and up stacked: silu(gate) * up, as two products and SwiGLU on the CPU. */
  async function checkSwiglu(
    s: { m: number; k: number; n: number; kParts?: number },
    o: Parameters<typeof stackOf>[2],
    tol: [number, number],
  ): Promise<void> {
    const { m, k, n } = s;
    const { w, data } = await stackOf([n, n], k, o);
    const x = randomArray(m * k, o.seed + 20);
    const y = ctx.storage(m * n * 4, 'y');
    const [got] = await read(
      (rec) => recordStackedMatmul(ctx, rec, { x: upload(x), w, m, kParts: s.kParts, out: { kind: 'swiglu', y } }),
      [{ buffer: y, floats: m * n }],
    );
    const roundX = ctx.features.subgroupMatrix !== null;
    const expected = reference(x, m, k, data[0]!, undefined, roundX);
    swiglu(expected, expected, reference(x, m, k, data[1]!, undefined, roundX), m * n);
    expectClose(got!, expected, tol[0], tol[1], 'silu(gate) * up');
  }

  /**
   * q, k and v stacked, their product's reduction doing RoPE and the KV write: q rotated into its buffer, k rotated
   * and v into caches of `capacity` tokens at `position`.. (or `slots`), every other cache row left as it was.
   */
  async function checkQkvIntoCache(
    s: { m: number; k: number; heads: number; kvHeads: number; headDim: number; kParts?: number; position: number; slots?: number[] },
    o: Parameters<typeof stackOf>[2],
    tol: [number, number],
  ): Promise<void> {
    const { m, k, headDim } = s;
    const rows: [number, number, number] = [s.heads * headDim, s.kvHeads * headDim, s.kvHeads * headDim];
    const kvDim = rows[1];
    const { w, data, biases } = await stackOf(rows, k, o);
    const plan = planStacked(ctx, w, m, s.kParts);
    expect(plan, 'the stack runs as one split product').to.not.equal(null);
    const x = randomArray(m * k, o.seed + 20);
    const positions = s.slots ?? Array.from({ length: m }, (_, t) => s.position + t);
    const capacity = Math.max(...positions) + 3;
    const before = [randomArray(capacity * kvDim, o.seed + 30), randomArray(capacity * kvDim, o.seed + 31)];
    const [cacheK, cacheV] = before.map((c) => upload(c)) as [GPUBuffer, GPUBuffer];
    const q = ctx.storage(m * rows[0] * 4, 'q');
    const invFreq = ropeInvFreq({ headDim, ropeTheta: 10000, ropeScaling: null });
    const slots = s.slots ? ctx.upload(Uint32Array.from(s.slots), 'slots') : undefined;
    const args = { x: upload(x), w, m, plan: plan!, q, cacheK, cacheV, invFreq: upload(invFreq), headDim, position: s.position, slots };
    const [gotQ, gotK, gotV] = await read(
      (rec) => recordQkvIntoCache(ctx, rec, args),
      [
        { buffer: q, floats: m * rows[0] },
        { buffer: cacheK, floats: capacity * kvDim },
        { buffer: cacheV, floats: capacity * kvDim },
      ],
    );
    const roundX = ctx.features.subgroupMatrix !== null;
    const [wantQ, newK, newV] = rows.map((_, i) => reference(x, m, k, data[i]!, o.bias ? biases[i] : undefined, roundX));
    applyRope(wantQ!, wantQ!, m, s.heads, headDim, positions, invFreq);
    applyRope(newK!, newK!, m, s.kvHeads, headDim, positions, invFreq);
    const [wantK, wantV] = [Float32Array.from(before[0]!), Float32Array.from(before[1]!)];
    positions.forEach((p, t) => {
      wantK.set(newK!.subarray(t * kvDim, (t + 1) * kvDim), p * kvDim);
      wantV.set(newV!.subarray(t * kvDim, (t + 1) * kvDim), p * kvDim);
    });
    expectClose(gotQ!, wantQ!, tol[0], tol[1], 'q after RoPE');
    expectClose(gotK!, wantK, tol[0], tol[1], 'the key cache');
    expectClose(gotV!, wantV, tol[0], tol[1], 'the value cache');
  }

  it('a stack holds each part as a view of its rows, in rows and in blocks; off a view boundary the parts stay apart', async () => {
    const k = 64;
    for (const layout of ['rows', 'blocks'] as const) {
      const { w } = await stackOf([128, 256], k, { layout, bias: false, seed: 1 });
      expect(w.whole!.w.rows).to.equal(384);
      expect(w.parts.map((p) => ('buffer' in p.w.buffer ? p.w.buffer.offset : -1))).to.deep.equal([0, 128 * (k / 2) * 4]);
    }
    const tensors = (rows: number[]) => rows.map((r) => ({ shape: [r, k], data: new Float32Array(r * k) }));
    // A part starting inside a 128-row group of the blocks layout cannot be a view of it.
    expect(await uploadStackedF16(ctx, tensors([100, 128]), 'stack', 'blocks')).to.equal(null);
    // Nor one whose byte offset a binding cannot take (one row of one word: 4 bytes).
    const narrow = [1, 8].map((r) => ({ shape: [r, 2], data: new Float32Array(r * 2) }));
    expect(await uploadStackedF16(ctx, narrow, 'stack', 'rows')).to.equal(null);
    // Parts of different widths are not one matrix.
    const mixed = [
      { shape: [64, 64], data: new Float32Array(64 * 64) },
      { shape: [64, 32], data: new Float32Array(64 * 32) },
    ];
    expect(await uploadStackedF16(ctx, mixed, 'stack', 'rows')).to.equal(null);
  });

  // W row-major (the portable tiled kernel; the tensor cores where the adapter has them, x then rounded to f16): 7 rows
  // of x against parts of width 96, K split three ways (one product and the stacked reduction), unsplit (part by part
  // over views) and with parts in buffers of their own.
  const tiled = { layout: 'rows' as const, tol: (): [number, number] => (ctx.features.subgroupMatrix ? [1e-4, 1e-4] : [2e-5, 1e-5]) };
  for (const [kParts, separate] of [
    [3, false],
    [1, false],
    [3, true],
  ] as const) {
    const how = separate ? 'parts apart' : kParts > 1 ? `one product split into ${kParts} K parts` : 'part by part over views';
    it(`q, k and v with biases: ${how}, each to its own buffer (atol 2e-5; 1e-4 on tensor cores)`, async () => {
      await checkColumns(
        { m: 7, k: 96, rows: [64, 32, 32], kParts },
        { layout: tiled.layout, bias: true, separate, seed: 40 },
        tiled.tol(),
      );
    });
    it(`gate and up: ${how}, through SwiGLU (atol 2e-5; 1e-4 on tensor cores)`, async () => {
      await checkSwiglu({ m: 7, k: 96, n: 48, kParts }, { layout: tiled.layout, bias: false, separate, seed: 50 }, tiled.tol());
    });
  }

  // RoPE at positions 1000.., and GQA (two query heads to a KV head). An angle near 1000 radians is reduced with fused
  // multiply-adds (rope-common.wgsl); where an adapter rounds between the multiply and the add (SwiftShader) it is off
  // by up to an f32 step at 1000 (6e-5), so the rotated values by up to that times their size (about 1 here).
  const rotated: [number, number] = [1e-4, 1e-4];
  it('q, k and v with biases, one split product whose reduction rotates q and k and writes k and v at a position (atol 1e-4 + 1e-4 rel)', async () => {
    const shape = { m: 7, k: 96, heads: 4, kvHeads: 2, headDim: 16, kParts: 3, position: 1000 };
    await checkQkvIntoCache(shape, { layout: tiled.layout, bias: true, seed: 80 }, rotated);
  });
  it('the same into the rows a blend names (slots), every other cache row kept (atol 1e-4 + 1e-4 rel)', async () => {
    const shape = { m: 5, k: 96, heads: 4, kvHeads: 2, headDim: 16, kParts: 2, position: 0, slots: [3, 4, 9, 1040, 1041] };
    await checkQkvIntoCache(shape, { layout: tiled.layout, bias: false, seed: 90 }, rotated);
  });

  it('where the product splits on its own, the stack runs as one split product', () => {
    const part = { w: { buffer: ctx.dummy, rows: 64, cols: 256, f16: true, rowWords: 128, layout: 'rows' as const } };
    const whole = { w: { ...part.w, rows: 192 } };
    const plan = planMatmul(ctx, { w: whole.w, m: 41 });
    expect(plan?.split.parts ?? 1, 'a 41-row question over K = 256 splits').to.be.greaterThan(1);
    expect(planMatmul(ctx, { w: whole.w, m: 1 }), 'a decode step runs matvec').to.equal(null);
  });

  // The tensor cores, where the adapter has them (NVIDIA through Dawn's Vulkan backend; SwiftShader has none): weights
  // in blocks, the short kernel (a question's 64 rows over K = 4096, split by its launcher) and the 128 x 128 one
  // (130 rows, split three ways); x rounded to f16 as those kernels read it.
  describe('on the tensor cores', () => {
    before(function () {
      if (ctx.features.subgroupMatrix === null) this.skip();
    });
    const tc = { layout: 'blocks' as const, tol: [1e-4, 1e-4] as [number, number] };
    it('q, k and v through RoPE into the caches, m=64 k=4096, heads of 128 (atol 1e-4 + 1e-4 rel)', async () => {
      const shape = { m: 64, k: 4096, heads: 4, kvHeads: 1, headDim: 128, position: 8192 };
      await checkQkvIntoCache(shape, { layout: tc.layout, bias: false, seed: 100 }, tc.tol);
    });
    for (const [m, k, kParts] of [
      [64, 4096, undefined],
      [130, 256, 3],
    ] as const) {
      it(`q, k and v with biases, m=${m} k=${k}${kParts ? `, ${kParts} K parts` : ''} (atol 1e-4 + 1e-4 rel)`, async () => {
        await checkColumns({ m, k, rows: [512, 128, 128], kParts }, { layout: tc.layout, bias: true, seed: 60 }, tc.tol);
      });
      it(`gate and up, m=${m} k=${k}${kParts ? `, ${kParts} K parts` : ''} (atol 1e-4 + 1e-4 rel)`, async () => {
        await checkSwiglu({ m, k, n: 384, kParts }, { layout: tc.layout, bias: false, seed: 70 }, tc.tol);
      });
    }
  });

  // A model wide enough (256) that a 41-token prompt's projections split over K: Qwen2, so q, k and v carry biases.
  describe('a forward whose projections split', () => {
    let dir: string;
    before(async () => {
      dir = await mkdtemp(join(tmpdir(), 'kdn-stacked-'));
    });
    after(async () => {
      if (dir) await rm(dir, { recursive: true, force: true });
    });

    // The tensor cores round each product's activations to f16 (the CPU keeps them f32): logits move by that rounding
    // relative to their size, which reached 0.021 at a logit of 4.4 on an H100.
    it("gives the CPU backend's logits for every token and its KV, over two chunks (atol 1e-4; 2e-2 + 1e-2 rel on tensor cores)", async () => {
      const options = {
        architecture: 'Qwen2ForCausalLM' as const,
        hiddenSize: 256,
        intermediateSize: 512,
        heads: 4,
        kvHeads: 2,
        layers: 2,
      };
      const model = await makeTinyModel(join(dir, 'qwen2'), { ...options, seed: 3 });
      const { weights } = await loadModelWeights(model.dir);
      const qkvRows = (options.heads + 2 * options.kvHeads) * (options.hiddenSize / options.heads);
      const plan = planMatmul(ctx, { w: { buffer: ctx.dummy, rows: qkvRows, cols: 256, f16: true, rowWords: 128, layout: 'rows' }, m: 41 });
      expect(plan?.split.parts ?? 1, 'q|k|v of 41 rows splits over K').to.be.greaterThan(1);
      const gpu = await createWebGPUBackend(weights, { weights: 'f16' });
      const cpu = createCpuBackend(roundWeightsToF16(weights));
      try {
        // Two chunks: the second's RoPE and KV write (done in the q|k|v reduction) at positions 41..81.
        const prompt = Uint32Array.from({ length: 82 }, (_, i) => (i * 37 + 11) % 300);
        const [g, c] = [gpu.createKVCache(96), cpu.createKVCache(96)];
        const tensorCores = gpu.device.includes('tensor cores');
        const [atol, rtol] = tensorCores ? [2e-2, 1e-2] : [1e-4, 0];
        for (const [start, end] of [
          [0, 41],
          [41, 82],
        ] as const) {
          const chunk = prompt.subarray(start, end);
          const [lg, lc] = [await gpu.forward(g, chunk, start, 'all'), await cpu.forward(c, chunk, start, 'all')];
          expectClose(lg, lc, atol, rtol, `logits of tokens ${start}..${end - 1}`);
        }
        const [kg, kc] = [await gpu.readKV(g, 0, 82), await cpu.readKV(c, 0, 82)];
        kg.perLayer.forEach((t, l) => {
          expectClose(t.keys, kc.perLayer[l]!.keys, atol, 1e-4, `layer ${l} keys`);
          expectClose(t.values, kc.perLayer[l]!.values, atol, 1e-4, `layer ${l} values`);
        });
      } finally {
        await gpu.dispose();
        await cpu.dispose();
      }
    });
  });
});
