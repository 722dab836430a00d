/**
 * Each WebGPU kernel against its CPU reference kernel (engine-adapter/cpu/kernels) on odd shapes: sizes that are
 * not multiples of the tile sizes, GQA ratio 3, sliding windows, positions past 1000.
 */
import { expect } from 'chai';
import { add } from '../../engine-adapter/cpu/kernels/add.ts';
import { attention } from '../../engine-adapter/cpu/kernels/attention.ts';
import { embedding } from '../../engine-adapter/cpu/kernels/embedding.ts';
import { matmul } from '../../engine-adapter/cpu/kernels/matmul.ts';
import { rmsnorm } from '../../engine-adapter/cpu/kernels/rmsnorm.ts';
import { applyRope, rerotate, ropeInvFreq } from '../../engine-adapter/cpu/kernels/rope.ts';
import { swiglu } from '../../engine-adapter/cpu/kernels/swiglu.ts';
import type { GpuContext } from '../../engine-adapter/webgpu/gpu-context.ts';
import { uploadMatrixF16, uploadMatrixF32, type GpuMatrix, type MatrixLayout } from '../../engine-adapter/webgpu/gpu-matrix.ts';
import { recordAttention } from '../../engine-adapter/webgpu/kernels/attention.ts';
import { recordEmbedding } from '../../engine-adapter/webgpu/kernels/embedding.ts';
import { recordKvWrite } from '../../engine-adapter/webgpu/kernels/kv-write.ts';
import { recordMatmulTiled, recordMatvec } from '../../engine-adapter/webgpu/kernels/matmul.ts';
import { recordMatmulAddNorm } from '../../engine-adapter/webgpu/kernels/matmul-add-norm.ts';
import type { MatmulInto } from '../../engine-adapter/webgpu/kernels/matmul-into.ts';
import { recordMatmulSubgroupMatrix } from '../../engine-adapter/webgpu/kernels/matmul-subgroup-matrix.ts';
import { recordAttentionSubgroupMatrix } from '../../engine-adapter/webgpu/kernels/attention-subgroup-matrix.ts';
import { RaggedAttention, raggedFits, type RaggedSequence } from '../../engine-adapter/webgpu/kernels/attention-ragged.ts';
import { GpuKVCache } from '../../engine-adapter/webgpu/gpu-kv-cache.ts';
import { KvBufferPool } from '../../engine-adapter/webgpu/kv-buffer-pool.ts';
import { MAX_JOBS } from '../../engine-adapter/webgpu/kernels/expand-jobs.ts';
import { recordRerotate, type RotateMode } from '../../engine-adapter/webgpu/kernels/rerotate.ts';
import { recordRmsNorm } from '../../engine-adapter/webgpu/kernels/rmsnorm.ts';
import { recordRope } from '../../engine-adapter/webgpu/kernels/rope.ts';
import { expectClose, f16RoundArray, openContextOrSkip, randomArray } from './webgpu-support.ts';

describe('webgpu kernels vs the CPU reference', () => {
  let ctx: GpuContext;

  before(async function () {
    ctx = await openContextOrSkip(this);
    const sm = ctx.features.subgroupMatrix;
    console.log(
      `      adapter: ${ctx.description}; shader-f16 ${ctx.features.shaderF16}, subgroups ${ctx.features.subgroups}, subgroup matrix ${sm ? sm.syntax : 'no'}`,
    );
  });
  after(() => ctx?.dispose());

  const upload = (data: Float32Array | Uint32Array): GPUBuffer => ctx.upload(data, 'test input');
  const run = async (record: (rec: ReturnType<GpuContext['recorder']>) => void, out: GPUBuffer, floats: number): Promise<Float32Array> => {
    const rec = ctx.recorder();
    record(rec);
    rec.readback(out, 0, floats * 4);
    const [bytes] = await rec.submit();
    return new Float32Array(bytes!);
  };
  const matrix = async (
    data: Float32Array,
    rows: number,
    cols: number,
    f16: boolean,
    layout: MatrixLayout = 'rows',
  ): Promise<GpuMatrix> => {
    const tensor = { shape: [rows, cols], data };
    return f16 ? uploadMatrixF16(ctx, tensor, 'w', layout) : uploadMatrixF32(ctx, tensor, 'w');
  };

  /**
   * y += x W^T + bias, then y's rows normed into out (matmul-add-norm.ts, through the path recordMatmul would take)
   * against the CPU's matmul, add and rmsnorm; inputs drawn from `seed` on. `exact` says how the GPU's path rounds:
   * f16 weights, and x too on the tensor cores.
   */
  const checkMatmulAddNorm = async (
    shape: { m: number; k: number; n: number; kParts?: number },
    seed: number,
    w16: { f16: boolean; layout: MatrixLayout; roundX: boolean },
    tol: { atol: number; rtol: number },
  ): Promise<void> => {
    const { m, k, n, kParts } = shape;
    const x = randomArray(m * k, seed);
    const w = randomArray(n * k, seed + 1, 0.5);
    const bias = randomArray(n, seed + 2);
    const y0 = randomArray(m * n, seed + 3, 4);
    const weight = randomArray(n, seed + 4);
    const expectedY = new Float32Array(m * n);
    matmul(expectedY, w16.roundX ? f16RoundArray(x) : x, w16.f16 ? f16RoundArray(w) : w, m, k, n, bias);
    add(expectedY, y0, expectedY, m * n);
    const expectedOut = new Float32Array(m * n);
    rmsnorm(expectedOut, expectedY, weight, m, n, 1e-5);
    const [y, out] = [upload(y0), ctx.storage(m * n * 4, 'out')];
    const args = { x: upload(x), w: await matrix(w, n, k, w16.f16, w16.layout), bias: upload(bias), y, m, kParts };
    const rec = ctx.recorder();
    recordMatmulAddNorm(ctx, rec, { ...args, norm: { weight: upload(weight), out, eps: 1e-5 } });
    rec.readback(y, 0, m * n * 4);
    rec.readback(out, 0, m * n * 4);
    const [gotY, gotOut] = (await rec.submit()).map((b) => new Float32Array(b));
    expectClose(gotY!, expectedY, tol.atol, tol.rtol, 'y');
    expectClose(gotOut!, expectedOut, tol.atol, tol.rtol, 'normed');
  };

  for (const f16 of [false, true]) {
    const weights = f16 ? 'f16' : 'f32';
    // f32 sums of up to 130 products of values below 1 in another order: 1e-5 absolute is ample.
    const tol = 2e-5;
    // x W^T + bias through `record` against the CPU reference; inputs drawn from `seed`, seed + 1, seed + 2. With
    // `into`, y starts as values from seed + 3 and the product meets them as the CPU's add or swiglu would.
    const checkMatmul = async (
      record: typeof recordMatmulTiled,
      shape: { m: number; k: number; n: number; kParts?: number },
      seed: number,
      layout: MatrixLayout = 'rows',
      into: MatmulInto = 'replace',
    ): Promise<void> => {
      const { m, k, n, kParts } = shape;
      const x = randomArray(m * k, seed);
      const w = randomArray(n * k, seed + 1, 0.5);
      const bias = randomArray(n, seed + 2);
      const expected = new Float32Array(m * n);
      // The f16 path's exact reference is the same product with f16-rounded weights.
      matmul(expected, x, f16 ? f16RoundArray(w) : w, m, k, n, bias);
      const y0 = randomArray(m * n, seed + 3, 4);
      if (into === 'add') add(expected, y0, expected, m * n);
      if (into === 'swiglu') swiglu(expected, y0, expected, m * n);
      const y = into === 'replace' ? ctx.storage(m * n * 4, 'y') : upload(y0);
      const args = { x: upload(x), w: await matrix(w, n, k, f16, layout), bias: upload(bias), y, m, kParts, into };
      const got = await run((rec) => record(ctx, rec, args), y, m * n);
      expectClose(got, expected, tol, 1e-5, 'y');
    };

    for (const [path, m, k, n] of [
      ['tiled', 7, 37, 45],
      ['tiled', 70, 130, 129],
      ['matvec', 1, 37, 45],
      ['matvec', 2, 130, 1031],
    ] as const) {
      it(`matmul ${path} ${weights} weights m=${m} k=${k} n=${n} with bias (atol ${tol})`, async () => {
        await checkMatmul(path === 'tiled' ? recordMatmulTiled : recordMatvec, { m, k, n }, 1);
      });
    }

    if (f16) {
      // Weights in blocks of 128 rows x 32 columns (the tensor-core path's layout), 1031 rows: the last block padded.
      for (const [m, k, n] of [
        [1, 32, 45],
        [2, 160, 1031],
      ] as const) {
        it(`matmul matvec f16 weights in blocks m=${m} k=${k} n=${n} with bias (atol ${tol})`, async () => {
          await checkMatmul(recordMatvec, { m, k, n }, 11, 'blocks');
        });
      }
      it('the blocks layout refuses a width that is not a multiple of 32', async () => {
        let error: unknown;
        await matrix(randomArray(5 * 40, 3), 5, 40, true, 'blocks').catch((err: unknown) => (error = err));
        expect(error)
          .to.be.instanceOf(Error)
          .with.property('message')
          .that.matches(/multiple of 32 columns, not 40/);
      });
      it('the tiled matmul refuses weights in blocks', async () => {
        const args = {
          x: upload(randomArray(3 * 32, 1)),
          w: await matrix(randomArray(5 * 32, 2), 5, 32, true, 'blocks'),
          y: ctx.storage(60, 'y'),
          m: 3,
        };
        expect(() => recordMatmulTiled(ctx, ctx.recorder(), args)).to.throw(/row-major/);
      });
    }

    // Split-K: K cut into parts summed by their own workgroups, then reduced with the bias (m=70 k=130 above splits on
    // its own: its grid is small); here forced, with a ragged last part and with one 16-wide tile per part.
    for (const [m, k, n, kParts] of [
      [7, 130, 45, 3],
      [70, 256, 129, 16],
    ] as const) {
      it(`matmul tiled ${weights} weights m=${m} k=${k} n=${n} split into ${kParts} K parts, with bias (atol ${tol})`, async () => {
        await checkMatmul(recordMatmulTiled, { m, k, n, kParts }, 7);
      });
    }

    // The product added to y (the residual connection) or made silu(y) * product (SwiGLU, y holding the gate), as the
    // matmul finishes: by the kernel itself, and by the split-K reduction.
    for (const into of ['add', 'swiglu'] as const) {
      for (const [path, m, k, n, kParts] of [
        ['tiled', 7, 37, 45, 1],
        ['tiled', 7, 130, 45, 3],
        ['matvec', 2, 130, 1031, undefined],
      ] as const) {
        const split = kParts === 3 ? ', split into 3 K parts' : '';
        it(`matmul ${path} ${weights} weights m=${m} k=${k} n=${n}${split}, into y by ${into} (atol ${tol})`, async () => {
          await checkMatmul(path === 'tiled' ? recordMatmulTiled : recordMatvec, { m, k, n, kParts }, 21, 'rows', into);
        });
      }
    }

    // The output projection added to the residual stream and the post-attention norm: in the split product's
    // reduction (K in 3 ragged parts, or 16 one-tile parts), or after a matmul adding in its store (one part, matvec).
    for (const [path, m, k, n, kParts] of [
      ['tiled', 7, 130, 45, 3],
      ['tiled', 70, 256, 129, 16],
      ['tiled', 7, 37, 45, 1],
      ['matvec', 2, 130, 1031, undefined],
    ] as const) {
      const split = kParts !== undefined && kParts > 1 ? `, split into ${kParts} K parts` : '';
      it(`matmul ${path} ${weights} weights m=${m} k=${k} n=${n}${split} added into y, then y's rows normed (atol ${tol} + 1e-5 rel)`, async () => {
        await checkMatmulAddNorm({ m, k, n, kParts }, 51, { f16, layout: 'rows', roundX: false }, { atol: tol, rtol: 1e-5 });
      });
    }

    it(`matmul tiled ${weights} weights without bias`, async () => {
      const [m, k, n] = [5, 16, 3];
      const x = randomArray(m * k, 4);
      const w = randomArray(n * k, 5);
      const expected = new Float32Array(m * n);
      matmul(expected, x, f16 ? f16RoundArray(w) : w, m, k, n);
      const y = ctx.storage(m * n * 4, 'y');
      const args = { x: upload(x), w: await matrix(w, n, k, f16), y, m };
      const got = await run((rec) => recordMatmulTiled(ctx, rec, args), y, m * n);
      expectClose(got, expected, tol, 1e-5, 'y');
    });

    it(`embedding ${weights} table, odd width 45`, async () => {
      const [vocab, dim] = [11, 45];
      const table = randomArray(vocab * dim, 6);
      const ids = Uint32Array.from([3, 0, 10, 3, 7]);
      const expected = new Float32Array(ids.length * dim);
      embedding(expected, f16 ? f16RoundArray(table) : table, dim, ids);
      const out = ctx.storage(expected.byteLength, 'out');
      const t = await matrix(table, vocab, dim, f16);
      const got = await run(
        (rec) => recordEmbedding(ctx, rec, { ids: upload(ids), table: t, out, tokens: ids.length }),
        out,
        expected.length,
      );
      expectClose(got, expected, 0, 0, 'embedding');
    });
  }

  for (const [rows, n] of [
    [7, 45],
    [21, 20],
    [3, 600],
  ] as const) {
    it(`rmsnorm rows=${rows} n=${n} (rtol 1e-5)`, async () => {
      const x = randomArray(rows * n, 7, 3);
      const w = randomArray(n, 8);
      const expected = new Float32Array(rows * n);
      rmsnorm(expected, x, w, rows, n, 1e-6);
      const out = ctx.storage(expected.byteLength, 'out');
      const got = await run(
        (rec) => recordRmsNorm(ctx, rec, { x: upload(x), weight: upload(w), out, rows, n, eps: 1e-6 }),
        out,
        expected.length,
      );
      expectClose(got, expected, 1e-6, 1e-5, 'rmsnorm');
    });
  }

  const headDim = 20;
  const invFreqLlama3 = ropeInvFreq({
    headDim,
    ropeTheta: 500000,
    ropeScaling: { type: 'llama3', factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 64 },
  });

  it('rope at positions 1000.. with llama3-scaled frequencies (atol 2e-5)', async () => {
    const [tokens, heads, posBase] = [5, 3, 1000];
    const x = randomArray(tokens * heads * headDim, 11);
    const positions = Array.from({ length: tokens }, (_, t) => posBase + t);
    const expected = new Float32Array(x.length);
    applyRope(expected, x, tokens, heads, headDim, positions, invFreqLlama3);
    const buf = upload(x);
    const got = await run(
      (rec) => recordRope(ctx, rec, { x: buf, invFreq: upload(invFreqLlama3), tokens, heads, headDim, posBase }),
      buf,
      x.length,
    );
    expectClose(got, expected, 2e-5, 0, 'rope');
  });

  it('rope at a position per row, as stacked sequences of a batched step have them (atol 2e-5)', async () => {
    // Three sequences' rows one after another: 1 row at 3, 4 rows at 1000.., 2 rows at 0..
    const positions = [3, 1000, 1001, 1002, 1003, 0, 1];
    const [tokens, heads] = [positions.length, 3];
    const x = randomArray(tokens * heads * headDim, 15);
    const expected = new Float32Array(x.length);
    applyRope(expected, x, tokens, heads, headDim, positions, invFreqLlama3);
    const buf = upload(x);
    const slots = upload(Uint32Array.from(positions));
    const got = await run(
      (rec) => recordRope(ctx, rec, { x: buf, invFreq: upload(invFreqLlama3), tokens, heads, headDim, posBase: 0, slots }),
      buf,
      x.length,
    );
    expectClose(got, expected, 2e-5, 0, 'rope');
  });

  for (const delta of [37, -1000]) {
    it(`rerotate cached keys by ${delta} (atol 2e-5)`, async () => {
      const [capacity, start, tokens, kvHeads] = [12, 3, 7, 2];
      const stride = kvHeads * headDim;
      const cache = randomArray(capacity * stride, 12);
      const expected = cache.slice();
      const span = expected.subarray(start * stride, (start + tokens) * stride);
      rerotate(span, span, tokens, kvHeads, headDim, delta, invFreqLlama3);
      const buf = upload(cache);
      const jobs = [{ start, mode: { kind: 'delta', delta } as const }];
      const got = await run(
        (rec) => recordRerotate(ctx, rec, { cache: buf, invFreq: upload(invFreqLlama3), tokens, kvHeads, headDim, jobs }),
        buf,
        cache.length,
      );
      expectClose(got, expected, 2e-5, 0, 'keys');
    });
  }

  it('rerotate applies RoPE to pre-RoPE keys at their positions', async () => {
    const [capacity, start, tokens, kvHeads] = [40, 30, 9, 3];
    const stride = kvHeads * headDim;
    const cache = randomArray(capacity * stride, 13);
    const expected = cache.slice();
    const span = expected.subarray(start * stride, (start + tokens) * stride);
    applyRope(
      span,
      span,
      tokens,
      kvHeads,
      headDim,
      Array.from({ length: tokens }, (_, t) => start + t),
      invFreqLlama3,
    );
    const buf = upload(cache);
    const got = await run(
      (rec) =>
        recordRerotate(ctx, rec, {
          cache: buf,
          invFreq: upload(invFreqLlama3),
          tokens,
          kvHeads,
          headDim,
          jobs: [{ start, mode: { kind: 'positions' } }],
        }),
      buf,
      cache.length,
    );
    expectClose(got, expected, 2e-5, 0, 'keys');
  });

  it(`rerotate takes more jobs than one dispatch holds (${MAX_JOBS}), each with its own start and mode`, async () => {
    // Past one dispatch's jobs, at positions and deltas within a few hundred (f32 angles drift past the tolerance beyond).
    const [runs, tokens, kvHeads] = [MAX_JOBS + 3, 2, 2];
    const stride = kvHeads * headDim;
    const cache = randomArray(runs * tokens * stride, 14);
    const expected = cache.slice();
    const jobs = Array.from({ length: runs }, (_, i) => {
      const start = i * tokens;
      const mode: RotateMode = i % 2 === 0 ? { kind: 'delta', delta: 13 * (i % 20) - 100 } : { kind: 'positions' };
      const span = expected.subarray(start * stride, (start + tokens) * stride);
      if (mode.kind === 'delta') rerotate(span, span, tokens, kvHeads, headDim, mode.delta, invFreqLlama3);
      else
        applyRope(
          span,
          span,
          tokens,
          kvHeads,
          headDim,
          Array.from({ length: tokens }, (_, t) => start + t),
          invFreqLlama3,
        );
      return { start, mode };
    });
    const buf = upload(cache);
    const got = await run(
      (rec) => recordRerotate(ctx, rec, { cache: buf, invFreq: upload(invFreqLlama3), tokens, kvHeads, headDim, jobs }),
      buf,
      cache.length,
    );
    expectClose(got, expected, 2e-5, 0, 'keys');
  });

  it('kv-write places new rows at a token offset and leaves the rest', async () => {
    const [capacity, rowSize, tokens, position] = [10, 12, 3, 6];
    const k = randomArray(tokens * rowSize, 14);
    const v = randomArray(tokens * rowSize, 15);
    const cacheK = ctx.storage(capacity * rowSize * 4, 'k');
    const cacheV = ctx.storage(capacity * rowSize * 4, 'v');
    const rec = ctx.recorder();
    recordKvWrite(ctx, rec, { k: upload(k), v: upload(v), cacheK, cacheV, tokens, rowSize, position });
    rec.readback(cacheK, 0, capacity * rowSize * 4);
    rec.readback(cacheV, 0, capacity * rowSize * 4);
    const [gotK, gotV] = (await rec.submit()).map((b) => new Float32Array(b));
    const expectedK = new Float32Array(capacity * rowSize);
    expectedK.set(k, position * rowSize);
    const expectedV = new Float32Array(capacity * rowSize);
    expectedV.set(v, position * rowSize);
    expectClose(gotK!, expectedK, 0, 0, 'keys');
    expectClose(gotV!, expectedV, 0, 0, 'values');
  });

  for (const [tokens, posBase, hd, window] of [
    [5, 40, 20, null],
    [5, 40, 20, 7],
    [1, 77, 20, null],
    [19, 0, 20, 4],
    [3, 50, 128, null],
    [33, 0, 8, null],
    [2, 300, 64, null],
    [4, 300, 64, 50],
  ] as const) {
    // splits: the key range in that many parts merged by attention-combine (5 leaves some parts empty).
    for (const splits of [1, 3, 5])
      it(`attention tokens=${tokens} at ${posBase}, headDim ${hd}, GQA 3, window ${window}, ${splits} key split(s) (atol 2e-5)`, async () => {
        const [heads, kvHeads] = [6, 2];
        const ctxLen = posBase + tokens;
        const q = randomArray(tokens * heads * hd, 16);
        const keys = randomArray(ctxLen * kvHeads * hd, 17);
        const values = randomArray(ctxLen * kvHeads * hd, 18);
        const positions = Array.from({ length: tokens }, (_, t) => posBase + t);
        const expected = new Float32Array(q.length);
        attention(expected, q, positions, keys, values, { tokens, heads, kvHeads, headDim: hd, slidingWindow: window });
        const out = ctx.storage(q.byteLength, 'out');
        const args = {
          q: upload(q),
          cacheK: upload(keys),
          cacheV: upload(values),
          out,
          tokens,
          heads,
          kvHeads,
          headDim: hd,
          posBase,
          window,
          splits,
        };
        const got = await run((rec) => recordAttention(ctx, rec, args), out, q.length);
        const worst = expectClose(got, expected, 2e-5, 0, 'attention');
        expect(worst).to.be.below(2e-5);
      });
  }

  // Sequences at scattered positions, their caches ranges of shared pooled blocks (two pools' blocks, so two
  // dispatches), attending in one ragged plan: each sequence's rows as the CPU reference gives them.
  // Rows of 1-5 tokens take 16-row workgroups; decode rows alone take 4 (3 heads of a group), 16 threads a row.
  const RAGGED_PLANS = {
    mixed: [
      { tokens: 1, position: 0 },
      { tokens: 1, position: 77 },
      { tokens: 3, position: 40 },
      { tokens: 5, position: 12 },
      { tokens: 2, position: 300 },
      { tokens: 1, position: 1030 },
    ],
    decoding: [0, 77, 40, 12, 300, 1030, 5].map((position) => ({ tokens: 1, position })),
  };
  for (const [hd, window, kind] of [
    [20, null, 'mixed'],
    [20, 7, 'mixed'],
    [64, null, 'mixed'],
    [20, 7, 'decoding'],
    [64, null, 'decoding'],
  ] as const) {
    it(`ragged attention of ${kind} sequences, headDim ${hd}, GQA 3, window ${window} (atol 2e-5)`, async () => {
      const [heads, kvHeads] = [6, 2];
      const shape = { heads, kvHeads, headDim: hd, window };
      const stride = kvHeads * hd;
      const pools = [new KvBufferPool(ctx), new KvBufferPool(ctx)];
      const plan = RAGGED_PLANS[kind];
      const rows = plan.reduce((sum, p) => sum + p.tokens, 0);
      const q = randomArray(rows * heads * hd, 30);
      const expected = new Float32Array(q.length);
      const sequences: RaggedSequence[] = [];
      let row = 0;
      for (const [i, { tokens, position }] of plan.entries()) {
        expect(raggedFits(shape, tokens)).to.equal(true);
        const keys = randomArray((position + tokens) * stride, 31 + i);
        const values = randomArray((position + tokens) * stride, 41 + i);
        const cache = new GpuKVCache(ctx, 2048, 1, stride, { pool: pools[i % 2]!, whenSubmitted: (release) => release() });
        cache.reserve(position + tokens, () => ctx.recorder());
        ctx.device.queue.writeBuffer(cache.keys[0]!.buffer, cache.keys[0]!.offset, keys);
        ctx.device.queue.writeBuffer(cache.values[0]!.buffer, cache.values[0]!.offset, values);
        const positions = Array.from({ length: tokens }, (_, t) => position + t);
        const rowFloats = heads * hd;
        const got = new Float32Array(tokens * rowFloats);
        const qRows = q.subarray(row * rowFloats, (row + tokens) * rowFloats);
        attention(got, qRows, positions, keys, values, { tokens, heads, kvHeads, headDim: hd, slidingWindow: window });
        expected.set(got, row * rowFloats);
        sequences.push({ row, tokens, position, cache });
        row += tokens;
      }
      expect(raggedFits(shape, 6), 'six rows of GQA 3 overflow a workgroup').to.equal(false);
      const out = ctx.storage(q.byteLength, 'out');
      const qBuffer = upload(q);
      const got = await run((rec) => new RaggedAttention(ctx, rec, shape, sequences, 1).record(rec, 0, qBuffer, out), out, q.length);
      expect(expectClose(got, expected, 2e-5, 0, 'ragged attention')).to.be.below(2e-5);
      for (const seq of sequences) seq.cache.dispose();
      for (const pool of pools) pool.destroy();
    });
  }

  // The tensor-core kernels exist only where the adapter lists a 16x16x16 f16 subgroup-matrix configuration (NVIDIA
  // through Dawn's Vulkan backend). SwiftShader, CI's adapter, has none: there these tests skip, even under CI=true.
  describe('subgroup-matrix (tensor core) kernels', () => {
    before(function () {
      if (ctx.features.subgroupMatrix === null) {
        console.log(
          `      no tensor-core path on this adapter (CI's SwiftShader has none), skipping: ${ctx.features.subgroupMatrixAbsence}`,
        );
        this.skip();
      }
    });

    // m up to 64 takes the short kernel (64 x 128 tiles), more the 128 x 128 one. kParts undefined: the launcher's
    // choice (a question-sized m=64 over k=4096 splits K to fill the GPU); given: forced, with a ragged last part.
    // Each with W row-major and in blocks (the engine's layout here; ragged n pads the last block).
    for (const [m, k, n, bias, kParts] of [
      [70, 64, 129, true, undefined],
      [130, 96, 45, false, undefined],
      [256, 2048, 512, true, undefined],
      [300, 96, 260, true, undefined],
      [64, 4096, 1024, true, undefined],
      [70, 320, 129, true, 3],
      [33, 128, 40, false, 4],
      [17, 320, 200, true, undefined],
      [40, 96, 70, true, undefined],
    ] as const)
      for (const layout of ['rows', 'blocks'] as const) {
        // Inputs are rounded to f16 and products summed in f32: against the f16-rounded reference only the order differs.
        it(`matmul m=${m} k=${k} n=${n}${bias ? ' with bias' : ''}${kParts ? `, ${kParts} K parts` : ''}, W in ${layout}, vs the f16-rounded reference (atol 1e-4 + 1e-4 rel)`, async () => {
          const x = randomArray(m * k, 31);
          const w = randomArray(n * k, 32, 0.5);
          const b = randomArray(n, 33);
          const expected = new Float32Array(m * n);
          matmul(expected, f16RoundArray(x), f16RoundArray(w), m, k, n, bias ? b : undefined);
          const y = ctx.storage(m * n * 4, 'y');
          const args = { x: upload(x), w: await matrix(w, n, k, true, layout), bias: bias ? upload(b) : undefined, y, m, kParts };
          const got = await run((rec) => recordMatmulSubgroupMatrix(ctx, rec, args), y, m * n);
          console.log(`      worst difference ${expectClose(got, expected, 1e-4, 1e-4, 'y').toExponential(2)}`);
        });
      }

    // The product met with what y holds (MatmulArgs.into): after the 128 x 128 kernel by an elementwise pass, by the
    // short kernel's own store (one K part) and by its split-K reduction (a question-sized m=64 over k=4096).
    for (const [m, k, n, kParts] of [
      [130, 96, 45, undefined],
      [33, 128, 40, 1],
      [64, 4096, 1024, undefined],
    ] as const)
      for (const into of ['add', 'swiglu'] as const) {
        it(`matmul m=${m} k=${k} n=${n}, W in blocks, into y by ${into}, vs the f16-rounded reference (atol 1e-4 + 1e-4 rel)`, async () => {
          const x = randomArray(m * k, 34);
          const w = randomArray(n * k, 35, 0.5);
          const y0 = randomArray(m * n, 36, 4);
          const expected = new Float32Array(m * n);
          matmul(expected, f16RoundArray(x), f16RoundArray(w), m, k, n);
          if (into === 'add') add(expected, y0, expected, m * n);
          else swiglu(expected, y0, expected, m * n);
          const y = upload(y0);
          const args = { x: upload(x), w: await matrix(w, n, k, true, 'blocks'), y, m, kParts, into };
          const got = await run((rec) => recordMatmulSubgroupMatrix(ctx, rec, args), y, m * n);
          console.log(`      worst difference ${expectClose(got, expected, 1e-4, 1e-4, 'y').toExponential(2)}`);
        });
      }

    // The output projection and post-attention norm of a question (m=64 over k=4096: the short kernel splits K), and
    // of a 4096-row prefill chunk's shape cut short (no split: the 128 x 128 kernel adds in its store).
    for (const [m, k, n] of [
      [64, 4096, 1024],
      [130, 256, 200],
    ] as const)
      it(`matmul m=${m} k=${k} n=${n}, W in blocks, added into y, then y's rows normed, vs the f16-rounded reference (atol 1e-4 + 1e-4 rel)`, async () => {
        await checkMatmulAddNorm({ m, k, n }, 61, { f16: true, layout: 'blocks', roundX: true }, { atol: 1e-4, rtol: 1e-4 });
      });

    // Attention over 6 query heads sharing 2 KV heads (GQA 3) against the CPU reference.
    const [heads, kvHeads] = [6, 2];
    const checkAttention = async (
      shape: { tokens: number; posBase: number; hd: number; window: number | null; splits: number | undefined },
      data: { q: Float32Array; keys: Float32Array; values: Float32Array },
    ): Promise<void> => {
      const { tokens, posBase, hd, window, splits } = shape;
      const positions = Array.from({ length: tokens }, (_, t) => posBase + t);
      const expected = new Float32Array(data.q.length);
      attention(expected, data.q, positions, data.keys, data.values, { tokens, heads, kvHeads, headDim: hd, slidingWindow: window });
      const out = ctx.storage(data.q.byteLength, 'out');
      const args = {
        q: upload(data.q),
        cacheK: upload(data.keys),
        cacheV: upload(data.values),
        out,
        tokens,
        heads,
        kvHeads,
        headDim: hd,
        posBase,
        window,
        splits,
      };
      const got = await run((rec) => recordAttentionSubgroupMatrix(ctx, rec, args), out, data.q.length);
      console.log(`      worst difference ${expectClose(got, expected, 2e-3, 0, 'attention').toExponential(2)}`);
    };

    for (const [tokens, posBase, hd, window] of [
      [40, 0, 64, null],
      [40, 100, 64, 50],
      [70, 33, 128, null],
      [8, 1500, 128, null],
      [6, 900, 64, 300],
    ] as const) {
      // splits: undefined lets the launcher choose (a short query over long KV splits on its own); 3 and 5 force parts
      // merged by attention-combine, some of them empty for the windowed case.
      // q, k, v and the softmax weights go through f16 (f32 sums): outputs, averages of values in [-1, 1], move < 2e-3.
      for (const splits of [undefined, 3, 5])
        it(`attention tokens=${tokens} at ${posBase}, headDim ${hd}, GQA 3, window ${window}, ${splits ?? 'chosen'} split(s) (atol 2e-3)`, async () => {
          const ctxLen = posBase + tokens;
          await checkAttention(
            { tokens, posBase, hd, window, splits },
            {
              q: randomArray(tokens * heads * hd, 34),
              keys: randomArray(ctxLen * kvHeads * hd, 35),
              values: randomArray(ctxLen * kvHeads * hd, 36),
            },
          );
        });
    }

    // Scores that keep rising along the keys (keys grow with position, q is large) make every row raise its reference
    // maximum many times, through the kernel's rescale of its accumulators. q and k are f16-exact and headDim 64
    // scales by exactly 1/8, so the scores are exact and only the f16 probabilities differ from the reference.
    for (const [window, splits] of [
      [null, undefined],
      [null, 3],
      [100, undefined],
    ] as const) {
      it(`attention with rising scores, window ${window}, ${splits ?? 'chosen'} split(s) (atol 2e-3)`, async () => {
        const [tokens, posBase, hd] = [40, 300, 64];
        const ctxLen = posBase + tokens;
        const keys = randomArray(ctxLen * kvHeads * hd, 38);
        for (let i = 0; i < keys.length; i++) keys[i]! *= 1 + Math.floor(i / (kvHeads * hd)) / 16;
        await checkAttention(
          { tokens, posBase, hd, window, splits },
          {
            q: f16RoundArray(randomArray(tokens * heads * hd, 37, 4)),
            keys: f16RoundArray(keys),
            values: randomArray(ctxLen * kvHeads * hd, 39),
          },
        );
      });
    }
  });
});
