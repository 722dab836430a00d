import { expect } from 'chai';
import { add } from '../../engine-adapter/cpu/kernels/add.ts';
import { argmax } from '../../engine-adapter/cpu/kernels/argmax.ts';
import { attention } from '../../engine-adapter/cpu/kernels/attention.ts';
import { embedding } from '../../engine-adapter/cpu/kernels/embedding.ts';
import { matmul } from '../../engine-adapter/cpu/kernels/matmul.ts';
import { rmsnorm } from '../../engine-adapter/cpu/kernels/rmsnorm.ts';
import { applyRope, rerotate, ropeInvFreq } from '../../engine-adapter/cpu/kernels/rope.ts';
import { softmax } from '../../engine-adapter/cpu/kernels/softmax.ts';
import { swiglu } from '../../engine-adapter/cpu/kernels/swiglu.ts';

function rng(seed: number): () => number {
  let s = seed;
  return () => {
    s = (s * 1103515245 + 12345) % 2147483648;
    return (s / 2147483648) * 2 - 1;
  };
}
const rand = rng(7);
const randArray = (n: number): Float32Array => Float32Array.from({ length: n }, rand);

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).to.equal(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

describe('engine cpu kernels', () => {
  it('embedding gathers rows and rejects ids outside the vocabulary', () => {
    const table = Float32Array.from({ length: 5 * 3 }, (_, i) => i);
    const out = new Float32Array(2 * 3);
    embedding(out, table, 3, [4, 1]);
    expect([...out]).to.deep.equal([12, 13, 14, 3, 4, 5]);
    expect(() => embedding(out, table, 3, [5])).to.throw(RangeError);
  });

  it('rmsnorm normalizes each row (in place too) and applies the weight', () => {
    const x = Float32Array.from([3, 4, 0, 0, 1, 1]);
    const w = Float32Array.from([1, 2]);
    const out = new Float32Array(6);
    rmsnorm(out, x, w, 3, 2, 1e-12);
    const r = Math.sqrt(12.5);
    expect(maxAbsDiff(out, [3 / r, 8 / r, 0, 0, 1, 2])).to.be.below(1e-6);
    rmsnorm(x, x, w, 3, 2, 1e-12);
    expect(maxAbsDiff(x, out)).to.equal(0);
  });

  it('matmul computes x W^T + b on odd shapes, through the 4x2 blocks and their leftovers', () => {
    for (const [m, k, n, withBias] of [
      [3, 7, 5, true],
      [9, 7, 5, true],
      [8, 13, 6, false],
      [4, 1, 1, true],
    ] as const) {
      const x = randArray(m * k);
      const w = randArray(n * k);
      const b = withBias ? randArray(n) : undefined;
      const out = new Float32Array(m * n);
      matmul(out, x, w, m, k, n, b);
      const ref = new Float32Array(m * n);
      for (let i = 0; i < m; i++) {
        for (let j = 0; j < n; j++) {
          let s = b ? b[j]! : 0;
          for (let t = 0; t < k; t++) s += x[i * k + t]! * w[j * k + t]!;
          ref[i * n + j] = s;
        }
      }
      expect(maxAbsDiff(out, ref), `m=${m} k=${k} n=${n}`).to.be.below(1e-5);
    }
  });

  it('ropeInvFreq follows the default formula and llama3 scaling band by band', () => {
    const plain = ropeInvFreq({ headDim: 16, ropeTheta: 500000, ropeScaling: null });
    for (let i = 0; i < 8; i++) expect(plain[i]).to.be.closeTo(500000 ** (-(2 * i) / 16), 1e-7 * plain[i]! + 1e-12);
    const s = { type: 'llama3' as const, factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 256 };
    const scaled = ropeInvFreq({ headDim: 16, ropeTheta: 500000, ropeScaling: s });
    const bands = new Set<string>();
    for (let i = 0; i < 8; i++) {
      const f = plain[i]!;
      const wavelen = (2 * Math.PI) / f;
      let expected: number;
      if (wavelen < 256 / 4) {
        expected = f;
        bands.add('high');
      } else if (wavelen > 256 / 1) {
        expected = f / 8;
        bands.add('low');
      } else {
        const smooth = (256 / wavelen - 1) / (4 - 1);
        expected = (1 - smooth) * (f / 8) + smooth * f;
        bands.add('medium');
      }
      expect(scaled[i]).to.be.closeTo(expected, 1e-6 * expected);
    }
    expect([...bands].sort()).to.deep.equal(['high', 'low', 'medium']);
  });

  it('applyRope rotates pairs (i, i + d/2) by position * invFreq, matching the direct formula', () => {
    const [tokens, heads, d] = [3, 2, 8];
    const x = randArray(tokens * heads * d);
    const invFreq = ropeInvFreq({ headDim: d, ropeTheta: 10000, ropeScaling: null });
    const positions = [0, 5, 1234];
    const out = new Float32Array(x.length);
    applyRope(out, x, tokens, heads, d, positions, invFreq);
    for (let t = 0; t < tokens; t++) {
      for (let h = 0; h < heads; h++) {
        const o = (t * heads + h) * d;
        for (let i = 0; i < d / 2; i++) {
          const a = positions[t]! * invFreq[i]!;
          // (x_i + i x_{i+d/2}) * e^{i a}
          expect(out[o + i]).to.be.closeTo(x[o + i]! * Math.cos(a) - x[o + i + d / 2]! * Math.sin(a), 2e-4);
          expect(out[o + i + d / 2]).to.be.closeTo(x[o + i + d / 2]! * Math.cos(a) + x[o + i]! * Math.sin(a), 2e-4);
        }
      }
    }
    expect(maxAbsDiff(out.subarray(0, heads * d), x.subarray(0, heads * d))).to.equal(0);
  });

  it('rerotate by a delta equals rotating at the moved position', () => {
    const [tokens, heads, d] = [4, 3, 16];
    const x = randArray(tokens * heads * d);
    const invFreq = ropeInvFreq({ headDim: d, ropeTheta: 500000, ropeScaling: null });
    const at = (p0: number): Float32Array => {
      const out = new Float32Array(x.length);
      applyRope(out, x, tokens, heads, d, [p0, p0 + 1, p0 + 2, p0 + 3], invFreq);
      return out;
    };
    for (const [from, to] of [
      [0, 300],
      [300, 7],
      [2, 2],
    ] as const) {
      const moved = at(from);
      rerotate(moved, moved, tokens, heads, d, to - from, invFreq);
      expect(maxAbsDiff(moved, at(to))).to.be.below(1e-5);
    }
  });

  function naiveAttention(
    q: Float32Array,
    positions: number[],
    keys: Float32Array,
    values: Float32Array,
    heads: number,
    kvHeads: number,
    d: number,
    window: number | null,
  ): Float32Array {
    const out = new Float32Array(q.length);
    positions.forEach((p, t) => {
      for (let h = 0; h < heads; h++) {
        const kh = Math.floor((h * kvHeads) / heads);
        const scores: number[] = [];
        for (let j = 0; j <= p; j++) {
          const visible = window === null || p - j < window;
          let s = 0;
          for (let i = 0; i < d; i++) s += q[(t * heads + h) * d + i]! * keys[(j * kvHeads + kh) * d + i]!;
          scores.push(visible ? s / Math.sqrt(d) : -Infinity);
        }
        const m = Math.max(...scores);
        const e = scores.map((s) => Math.exp(s - m));
        const z = e.reduce((a, b) => a + b, 0);
        for (let i = 0; i < d; i++) {
          let acc = 0;
          for (let j = 0; j <= p; j++) acc += (e[j]! / z) * values[(j * kvHeads + kh) * d + i]!;
          out[(t * heads + h) * d + i] = acc;
        }
      }
    });
    return out;
  }

  for (const window of [null, 3]) {
    it(`attention matches a naive softmax(QK^T)V with GQA at offset positions (window ${window})`, () => {
      const [heads, kvHeads, d, ctx] = [6, 2, 5, 11];
      const positions = [7, 8, 9, 10];
      const q = randArray(positions.length * heads * d);
      const keys = randArray(ctx * kvHeads * d);
      const values = randArray(ctx * kvHeads * d);
      const out = new Float32Array(q.length);
      attention(out, q, positions, keys, values, { tokens: positions.length, heads, kvHeads, headDim: d, slidingWindow: window });
      expect(maxAbsDiff(out, naiveAttention(q, positions, keys, values, heads, kvHeads, d, window))).to.be.below(1e-5);
    });
  }

  it('attention softmax is stable for huge scores', () => {
    const q = Float32Array.from([1e4, 0]);
    const keys = Float32Array.from([1e4, 0, -1e4, 0]);
    const values = Float32Array.from([1, 2, 3, 4]);
    const out = new Float32Array(2);
    attention(out, q, [1], keys, values, { tokens: 1, heads: 1, kvHeads: 1, headDim: 2, slidingWindow: null });
    expect([...out]).to.deep.equal([1, 2]);
  });

  it('swiglu, add, softmax and argmax', () => {
    const out = new Float32Array(3);
    swiglu(out, Float32Array.from([0, 1, -2]), Float32Array.from([5, 2, 3]), 3);
    expect(maxAbsDiff(out, [0, 2 / (1 + Math.exp(-1)), (3 * -2) / (1 + Math.exp(2))])).to.be.below(1e-6);
    add(out, Float32Array.from([1, 2, 3]), Float32Array.from([10, 20, 30]), 3);
    expect([...out]).to.deep.equal([11, 22, 33]);
    const p = Float32Array.from([1000, 1000, -Infinity, 0, 0, 0]);
    softmax(p, p, 2, 3);
    expect(maxAbsDiff(p, [0.5, 0.5, 0, 1 / 3, 1 / 3, 1 / 3])).to.be.below(1e-6);
    expect(argmax(Float32Array.from([1, 5, NaN, 5, 2]))).to.equal(1);
  });
});
