/**
 * The kernels of a blended forward (engine-adapter/webgpu/blend-forward.ts) against their CPU reference on odd
 * shapes: K/V deviation, the prompt's attention mass, row gathering, and RoPE, KV writes and attention for rows gathered at scattered positions
 * (ascending, with gaps, past 1000, GQA 3, sliding windows, key splits).
 */
import { expect } from 'chai';
import { attention } from '../../engine-adapter/cpu/kernels/attention.ts';
import { attentionMass } from '../../engine-adapter/cpu/kernels/attention-mass.ts';
import { kvDeviation } from '../../engine-adapter/cpu/kernels/kv-deviation.ts';
import { applyRope, ropeInvFreq } from '../../engine-adapter/cpu/kernels/rope.ts';
import type { GpuContext, Recorder } from '../../engine-adapter/webgpu/gpu-context.ts';
import { recordAttention } from '../../engine-adapter/webgpu/kernels/attention.ts';
import { recordAttentionMass } from '../../engine-adapter/webgpu/kernels/attention-mass.ts';
import { recordAttentionSubgroupMatrix } from '../../engine-adapter/webgpu/kernels/attention-subgroup-matrix.ts';
import { recordGatherRows } from '../../engine-adapter/webgpu/kernels/gather-rows.ts';
import { recordKvDeviation } from '../../engine-adapter/webgpu/kernels/kv-deviation.ts';
import { recordKvWrite } from '../../engine-adapter/webgpu/kernels/kv-write.ts';
import { recordRope } from '../../engine-adapter/webgpu/kernels/rope.ts';
import { expectClose, openContextOrSkip, randomArray } from './webgpu-support.ts';

/** `count` ascending positions below `end`, the last one end - 1, with irregular gaps (seeded). */
function scatteredSlots(count: number, end: number, seed: number): number[] {
  const picked = new Set<number>([end - 1]);
  let s = seed;
  while (picked.size < count) {
    s = (s * 1103515245 + 12345) % 2 ** 31;
    picked.add(s % end);
  }
  return [...picked].sort((a, b) => a - b);
}

describe('webgpu blend kernels vs the CPU reference', () => {
  let ctx: GpuContext;

  before(async function () {
    ctx = await openContextOrSkip(this);
  });
  after(() => ctx?.dispose());

  const upload = (data: Float32Array | Uint32Array): GPUBuffer => ctx.upload(data, 'test input');
  const run = async (record: (rec: Recorder) => void, out: GPUBuffer, floats: number): Promise<Float32Array> => {
    const rec = ctx.recorder();
    record(rec);
    rec.readback(out, 0, floats * 4);
    const [bytes] = await rec.submit();
    return new Float32Array(bytes!);
  };

  it('kv-deviation: 37 rows of 2 x 20 at position 1003 into an offset of the output (rtol 1e-5)', async () => {
    const [rows, rowSize, position, capacity, outOffset] = [37, 40, 1003, 1050, 5];
    const k = randomArray(rows * rowSize, 1);
    const v = randomArray(rows * rowSize, 2);
    const cacheK = randomArray(capacity * rowSize, 3);
    const cacheV = randomArray(capacity * rowSize, 4);
    const expected = new Float32Array(outOffset + rows);
    kvDeviation(
      expected.subarray(outOffset),
      k,
      v,
      cacheK,
      cacheV,
      Array.from({ length: rows }, (_, t) => position + t),
      rowSize,
    );
    const out = ctx.storage((outOffset + rows) * 4, 'out');
    const args = { k: upload(k), v: upload(v), cacheK: upload(cacheK), cacheV: upload(cacheV), rows, rowSize, position, out, outOffset };
    const got = await run((rec) => recordKvDeviation(ctx, rec, args), out, outOffset + rows);
    expectClose(got, expected, 1e-4, 1e-5, 'deviation');
  });

  it('kv-deviation: 11 rows of 2 x 20 at scattered slots past 1000 (rtol 1e-5)', async () => {
    const [rowSize, capacity] = [40, 1050];
    const slots = Uint32Array.of(0, 3, 4, 17, 250, 251, 600, 999, 1001, 1040, 1049);
    const rows = slots.length;
    const k = randomArray(rows * rowSize, 5);
    const v = randomArray(rows * rowSize, 6);
    const cacheK = randomArray(capacity * rowSize, 7);
    const cacheV = randomArray(capacity * rowSize, 8);
    const expected = new Float32Array(rows);
    kvDeviation(expected, k, v, cacheK, cacheV, slots, rowSize);
    const out = ctx.storage(rows * 4, 'out');
    const args = {
      k: upload(k),
      v: upload(v),
      cacheK: upload(cacheK),
      cacheV: upload(cacheV),
      rows,
      rowSize,
      position: 7,
      out,
      outOffset: 0,
    };
    const got = await run((rec) => recordKvDeviation(ctx, rec, { ...args, slots: upload(slots) }), out, rows);
    expectClose(got, expected, 1e-4, 1e-5, 'deviation');
  });

  for (const [rows, position, keys, hd, window] of [
    [3, 0, 45, 20, null],
    [5, 17, 1100, 64, null],
    [2, 40, 300, 128, 50],
  ] as const)
    it(`attention-mass: ${rows} rows at the end of ${keys} keys from ${position}, headDim ${hd}, GQA 3, window ${window} (atol 1e-6 + 1e-4 rel)`, async () => {
      const [heads, kvHeads] = [6, 2];
      const end = position + keys;
      const q = randomArray(rows * heads * hd, 40);
      const cacheK = randomArray(end * kvHeads * hd, 41);
      const posBase = end - rows;
      const expected = new Float32Array(end);
      attentionMass(
        expected,
        q,
        Array.from({ length: rows }, (_, t) => posBase + t),
        cacheK,
        { tokens: rows, heads, kvHeads, headDim: hd, slidingWindow: window },
      );
      const out = ctx.storage(keys * 4, 'out');
      const args = { q: upload(q), rows, posBase, cacheK: upload(cacheK), heads, kvHeads, headDim: hd, window, out, position, keys };
      const got = await run((rec) => recordAttentionMass(ctx, rec, args), out, keys);
      expectClose(got, expected.subarray(position), 1e-6, 1e-4, 'mass');
    });

  it('gather-rows: 9 scattered rows of 37 floats out of 50', async () => {
    const [n, cols] = [50, 37];
    const x = randomArray(n * cols, 5);
    const rows = Uint32Array.from(scatteredSlots(9, n, 6));
    const expected = new Float32Array(rows.length * cols);
    rows.forEach((r, i) => expected.set(x.subarray(r * cols, (r + 1) * cols), i * cols));
    const out = ctx.storage(expected.byteLength, 'out');
    const got = await run(
      (rec) => recordGatherRows(ctx, rec, { x: upload(x), rows: upload(rows), out, count: rows.length, cols }),
      out,
      expected.length,
    );
    expectClose(got, expected, 0, 0, 'rows');
  });

  // Angles reach 1400 radians at the highest frequency: an adapter whose fma is not fused (SwiftShader) rounds the
  // product in the angle's reduction, about 1400 * 2^-24 = 8e-5.
  it('rope at gathered slots past 1000, 3 heads of 20 (atol 1e-4)', async () => {
    const [heads, headDim] = [3, 20];
    const slots = scatteredSlots(11, 1400, 7);
    const x = randomArray(slots.length * heads * headDim, 8);
    const invFreq = ropeInvFreq({ headDim, ropeTheta: 10000, ropeScaling: null });
    const expected = new Float32Array(x.length);
    applyRope(expected, x, slots.length, heads, headDim, slots, invFreq);
    const buf = upload(x);
    const args = {
      x: buf,
      invFreq: upload(invFreq),
      tokens: slots.length,
      heads,
      headDim,
      posBase: 0,
      slots: upload(Uint32Array.from(slots)),
    };
    const got = await run((rec) => recordRope(ctx, rec, args), buf, x.length);
    expectClose(got, expected, 1e-4, 0, 'rotated');
  });

  it('kv-write puts each row at its slot and leaves the rest', async () => {
    const [capacity, rowSize] = [30, 12];
    const slots = scatteredSlots(7, capacity, 9);
    const k = randomArray(slots.length * rowSize, 10);
    const v = randomArray(slots.length * rowSize, 11);
    const initial = randomArray(capacity * rowSize, 12);
    const cacheK = upload(initial);
    const cacheV = upload(initial);
    const rec = ctx.recorder();
    recordKvWrite(ctx, rec, {
      k: upload(k),
      v: upload(v),
      cacheK,
      cacheV,
      tokens: slots.length,
      rowSize,
      position: 0,
      slots: upload(Uint32Array.from(slots)),
    });
    rec.readback(cacheK, 0, capacity * rowSize * 4);
    rec.readback(cacheV, 0, capacity * rowSize * 4);
    const [gotK, gotV] = (await rec.submit()).map((b) => new Float32Array(b));
    const expectedK = initial.slice();
    const expectedV = initial.slice();
    slots.forEach((slot, t) => {
      expectedK.set(k.subarray(t * rowSize, (t + 1) * rowSize), slot * rowSize);
      expectedV.set(v.subarray(t * rowSize, (t + 1) * rowSize), slot * rowSize);
    });
    expectClose(gotK!, expectedK, 0, 0, 'keys');
    expectClose(gotV!, expectedV, 0, 0, 'values');
  });

  // Query rows at scattered positions over a cache of `end` keys, 6 query heads over 2 KV heads.
  const [heads, kvHeads] = [6, 2];
  const attentionCase = (count: number, end: number, hd: number, window: number | null, seed: number) => {
    const slots = scatteredSlots(count, end, seed);
    const q = randomArray(count * heads * hd, seed + 1);
    const keys = randomArray(end * kvHeads * hd, seed + 2);
    const values = randomArray(end * kvHeads * hd, seed + 3);
    const expected = new Float32Array(q.length);
    attention(expected, q, slots, keys, values, { tokens: count, heads, kvHeads, headDim: hd, slidingWindow: window });
    const out = ctx.storage(q.byteLength, 'out');
    const args = {
      q: upload(q),
      cacheK: upload(keys),
      cacheV: upload(values),
      out,
      tokens: count,
      heads,
      kvHeads,
      headDim: hd,
      posBase: 0,
      window,
      slots: { buffer: upload(Uint32Array.from(slots)), last: slots.at(-1)! },
    };
    return { args, expected, out };
  };

  for (const [count, end, hd, window] of [
    [9, 60, 20, null],
    [9, 60, 20, 7],
    [23, 1300, 64, null],
    [5, 400, 128, 50],
  ] as const) {
    for (const splits of [1, 3])
      it(`attention, ${count} rows gathered from ${end}, headDim ${hd}, GQA 3, window ${window}, ${splits} split(s) (atol 2e-5)`, async () => {
        const { args, expected, out } = attentionCase(count, end, hd, window, 20);
        const got = await run((rec) => recordAttention(ctx, rec, { ...args, splits }), out, expected.length);
        expect(expectClose(got, expected, 2e-5, 0, 'attention')).to.be.below(2e-5);
      });
  }

  describe('on the tensor cores', () => {
    before(function () {
      if (ctx.features.subgroupMatrix === null) {
        console.log(
          `      no tensor-core path on this adapter (CI's SwiftShader has none), skipping: ${ctx.features.subgroupMatrixAbsence}`,
        );
        this.skip();
      }
    });

    for (const [count, end, hd, window] of [
      [40, 300, 64, null],
      [70, 1500, 128, null],
      [33, 900, 64, 200],
    ] as const) {
      // q, k, v and the softmax weights go through f16 (f32 sums): outputs, averages of values in [-1, 1], move < 2e-3.
      for (const splits of [undefined, 3])
        it(`attention, ${count} rows gathered from ${end}, headDim ${hd}, window ${window}, ${splits ?? 'chosen'} split(s) (atol 2e-3)`, async () => {
          const { args, expected, out } = attentionCase(count, end, hd, window, 30);
          const got = await run((rec) => recordAttentionSubgroupMatrix(ctx, rec, { ...args, splits }), out, expected.length);
          expectClose(got, expected, 2e-3, 0, 'attention');
        });
    }
  });
});
