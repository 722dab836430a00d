import { expect } from 'chai';
import {
  codecFor,
  codecFromString,
  codecToString,
  decodeKVObject,
  decodeTransformBlock,
  encodeKVObject,
  fitTransformTable,
  readKVHeader,
  slotOf,
  transformSections,
  transformTables,
  type TransformTable,
} from '../../storage/kv-object/index.ts';
import type { KVTensors } from '../../storage/kv-object/types.ts';
import { gaussian, rng, tokenIds, type Shape } from '../../fixtures/kv-data.ts';
import { isKdnError } from '../../common/errors.ts';
import { principalAxes } from '../../storage/kv-object/codecs/symmetric-eigen.ts';

/**
 * Pre-RoPE-like KV: every head's vectors lie near a `rank`-dimensional subspace of its own (a fixed random mixing
 * of `rank` gaussians with decaying scales, plus small isotropic noise), which is what PCA is for. The subspaces
 * come from `structureSeed` alone, so samples drawn with other `sampleSeed`s share them.
 */
function lowRankKV(shape: Shape, rank: number, noise: number, structureSeed: number, sampleSeed = structureSeed + 1): KVTensors {
  const structure = gaussian(rng(structureSeed));
  const normal = gaussian(rng(sampleSeed));
  const { layers, kvHeads: H, headDim: D, tokens } = shape;
  const make = (): Float32Array => {
    const out = new Float32Array(tokens * H * D);
    for (let h = 0; h < H; h++) {
      const mix = Array.from({ length: rank }, (_, r) => Float64Array.from({ length: D }, () => structure() * 2 ** -r));
      const offset = Float64Array.from({ length: D }, () => structure());
      for (let t = 0; t < tokens; t++) {
        const z = Array.from({ length: rank }, () => normal());
        for (let d = 0; d < D; d++) {
          let x = offset[d]! + noise * normal();
          for (let r = 0; r < rank; r++) x += z[r]! * mix[r]![d]!;
          out[(t * H + h) * D + d] = x;
        }
      }
    }
    return out;
  };
  const perLayer = Array.from({ length: layers }, () => ({ keys: make(), values: make() }));
  return { ...shape, positionBase: 5, ropeApplied: false, perLayer };
}

/** Squared distance from c to the nearest value its quantizer can represent (clamped to the code range). */
function gridError(c: number, bits: number, step: number, offset: number): number {
  if (bits === 0) return (c - offset) ** 2;
  const u = Math.min((1 << bits) - 1, Math.max(0, Math.round((c - offset) / step)));
  return (c - (u * step + offset)) ** 2;
}

/** Checks every decoded vector against its bound: no more error than its coefficients' nearest representable values. */
function checkBound(table: TransformTable, level: number, src: KVTensors, out: KVTensors): void {
  const { kvHeads: H, headDim: D } = table;
  const lv = table.levels[level]!;
  for (let l = 0; l < src.layers; l++) {
    for (const tensor of [0, 1] as const) {
      const want = tensor === 0 ? src.perLayer[l]!.keys : src.perLayer[l]!.values;
      const got = tensor === 0 ? out.perLayer[l]!.keys : out.perLayer[l]!.values;
      for (let h = 0; h < H; h++) {
        const slot = slotOf(table, l, tensor, h);
        for (let t = 0; t < src.tokens; t++) {
          const row = (t * H + h) * D;
          let bound = 0;
          let norm = 0;
          for (let j = 0; j < D; j++) {
            let c = 0;
            for (let d = 0; d < D; d++) c += table.basis[(slot * D + j) * D + d]! * (want[row + d]! - table.mean[slot * D + d]!);
            const i = slot * D + j;
            bound += gridError(c, lv.bits[i]!, lv.step[i]!, lv.offset[i]!);
          }
          let err = 0;
          for (let d = 0; d < D; d++) {
            err += (got[row + d]! - want[row + d]!) ** 2;
            norm += want[row + d]! ** 2;
          }
          // float32 rounding of the basis, the projection and the sums: far below any quantization step.
          const slack = 1e-9 * (norm + 1) * D;
          if (!(err <= bound * (1 + 1e-4) + slack))
            expect.fail(`layer ${l} tensor ${tensor} head ${h} token ${t}: error ${err} > bound ${bound}`);
        }
      }
    }
  }
}

function relativeError(src: KVTensors, out: KVTensors, kind: 'keys' | 'values'): number {
  let err = 0;
  let norm = 0;
  src.perLayer.forEach((layer, l) => {
    const a = layer[kind];
    const b = out.perLayer[l]![kind];
    for (let i = 0; i < a.length; i++) {
      err += (a[i]! - b[i]!) ** 2;
      norm += a[i]! ** 2;
    }
  });
  return err / norm;
}

function encodeWith(table: TransformTable, level: number, tensors: KVTensors): Buffer {
  return encodeKVObject(tensors, {
    modelFingerprint: table.modelFingerprint,
    tokenIds: tokenIds(tensors.tokens),
    codec: { name: 'transform', lz4: false, table: table.hash, level },
  });
}

describe('kv-object/transform codec', () => {
  const shapes: Shape[] = [
    { layers: 2, kvHeads: 1, headDim: 16, tokens: 1 },
    { layers: 1, kvHeads: 3, headDim: 24, tokens: 7 },
    { layers: 3, kvHeads: 3, headDim: 16, tokens: 33 },
    { layers: 1, kvHeads: 1, headDim: 24, tokens: 33 },
  ];

  for (const shape of shapes) {
    it(`round trip within the quantizer bound at every level, ${shape.layers}x${shape.kvHeads}x${shape.headDim}, ${shape.tokens} tokens`, () => {
      const table = transformTables.register(fitTransformTable([lowRankKV({ ...shape, tokens: 300 }, 6, 0.05, 11, 100)], 'fp-odd'));
      // Same distribution as the calibration, other samples: what the codec sees in use.
      const tensors = lowRankKV(shape, 6, 0.05, 11);
      for (let level = 0; level < table.levels.length; level++) {
        const bytes = encodeWith(table, level, tensors);
        const { header, tensors: out } = decodeKVObject(bytes);
        expect(header.codec).to.deep.equal({ name: 'transform', lz4: false, table: table.hash, level });
        expect(header.ropeApplied).to.equal(false);
        expect(header.positionBase).to.equal(5);
        checkBound(table, level, tensors, out);
        // The codec's decoder and the plain reference decoder agree on every block.
        const payload = bytes.subarray(bytes.length - header.layerOffsets[header.layers]!);
        for (let l = 0; l < shape.layers; l++) {
          const block = payload.subarray(header.layerOffsets[l]!, header.layerOffsets[l + 1]!);
          const ref = decodeTransformBlock(table, level, l, shape.tokens, block);
          for (const kind of ['keys', 'values'] as const) {
            const got = out.perLayer[l]![kind];
            for (let i = 0; i < got.length; i++) {
              if (!(Math.abs(got[i]! - ref[kind][i]!) <= 1e-5 * (1 + Math.abs(ref[kind][i]!)))) {
                expect.fail(`level ${level} layer ${l} ${kind}[${i}]: codec ${got[i]} vs reference ${ref[kind][i]}`);
              }
            }
          }
        }
      }
    });
  }

  it('sizes: each level is its target bits per element, sections whole u32 words in block order', () => {
    const shape = { layers: 2, kvHeads: 3, headDim: 16, tokens: 33 };
    const table = transformTables.register(fitTransformTable([lowRankKV({ ...shape, tokens: 200 }, 4, 0.1, 5)], 'fp-size'));
    table.levels.forEach((lv, q) => {
      let bits = 0;
      for (let l = 0; l < shape.layers; l++) {
        const layout = transformSections(table, q, l, shape.tokens);
        expect(layout.sections.map((s) => [s.tensor, s.head])).to.deep.equal([
          [0, 0],
          [0, 1],
          [0, 2],
          [1, 0],
          [1, 1],
          [1, 2],
        ]);
        let at = 0;
        for (const s of layout.sections) {
          expect(s.offset).to.equal(at);
          expect(s.bytes).to.equal(4 * Math.ceil((shape.tokens * s.rowBits) / 32));
          at += s.bytes;
          bits += s.rowBits;
        }
        expect(codecFor({ name: 'transform', lz4: false, table: table.hash, level: q }).expectedSize(shape, l)).to.equal(layout.total);
      }
      const elements = shape.layers * 2 * shape.kvHeads * shape.headDim;
      expect(Math.abs(bits / elements - lv.targetBits), lv.name).to.be.below(1 / shape.headDim + 1e-9);
    });
  });

  it('PCA finds low-rank structure: 1 bit per element reconstructs rank-4 data to < 1e-3 relative error', () => {
    const shape = { layers: 2, kvHeads: 2, headDim: 24, tokens: 64 };
    const table = transformTables.register(fitTransformTable([lowRankKV({ ...shape, tokens: 500 }, 4, 0.001, 21, 200)], 'fp-rank'));
    const x16 = table.levels.findIndex((l) => l.name === 'x16');
    const tensors = lowRankKV(shape, 4, 0.001, 21);
    const { tensors: out } = decodeKVObject(encodeWith(table, x16, tensors));
    expect(relativeError(tensors, out, 'keys')).to.be.below(1e-3);
    expect(relativeError(tensors, out, 'values')).to.be.below(1e-3);
    // Higher levels spend fewer bits: the error grows monotonically across levels on the same data.
    const errs = table.levels.map((_, q) => relativeError(tensors, decodeKVObject(encodeWith(table, q, tensors)).tensors, 'values'));
    for (let q = 1; q < errs.length; q++) expect(errs[q]!, `level ${q}`).to.be.at.least(errs[q - 1]! * 0.999);
  });

  it('principalAxes: orthonormal eigenvectors by decreasing eigenvalue, on odd sizes and a degenerate matrix', () => {
    const normal = gaussian(rng(3));
    for (const n of [1, 3, 24, 33]) {
      const b = Float64Array.from({ length: n * n }, () => normal());
      const a = new Float64Array(n * n);
      for (let i = 0; i < n; i++)
        for (let j = 0; j < n; j++) for (let k = 0; k < n; k++) a[i * n + j] += b[i * n + k]! * b[j * n + k]! * (k < 2 ? 50 : 1);
      const cases = [a, new Float64Array(n * n)];
      for (const m of cases) {
        const v = principalAxes(m, n);
        let previous = Infinity;
        for (let r = 0; r < n; r++) {
          const row = v.subarray(r * n, (r + 1) * n);
          const av = Array.from({ length: n }, (_, i) => row.reduce((sum, x, k) => sum + m[i * n + k]! * x, 0));
          const lambda = av.reduce((sum, x, i) => sum + x * row[i]!, 0);
          expect(lambda, `n ${n} row ${r} order`).to.be.at.most(previous + 1e-9 * (1 + Math.abs(previous)));
          previous = lambda;
          for (let i = 0; i < n; i++)
            expect(Math.abs(av[i]! - lambda * row[i]!), `n ${n} row ${r}`).to.be.below(1e-9 * (1 + Math.abs(lambda)));
          for (let q = 0; q < n; q++) {
            const dot = row.reduce((sum, x, i) => sum + x * v[q * n + i]!, 0);
            expect(Math.abs(dot - (q === r ? 1 : 0))).to.be.below(1e-12);
          }
        }
      }
    }
  });

  it('codec strings: transform, transform:<name>, transform:<index>; no lz4', () => {
    expect(codecFromString('transform')).to.deep.equal({ name: 'transform', lz4: false, level: 2 });
    expect(codecFromString('transform:x16')).to.deep.equal({ name: 'transform', lz4: false, level: 4 });
    expect(codecFromString('transform:0')).to.deep.equal({ name: 'transform', lz4: false, level: 0 });
    expect(codecToString({ name: 'transform', lz4: false, level: 4, table: 'a'.repeat(64) })).to.equal('transform:x16');
    for (const bad of ['transform:x99', 'transform:17', 'transform+lz4', 'int8:x8', 'transform:']) {
      try {
        codecFromString(bad);
        expect.fail(`accepted ${bad}`);
      } catch (err) {
        expect(isKdnError(err) && err.code, bad).to.equal('INVALID_ARGUMENT');
      }
    }
  });

  it('an object whose table is not registered: header reads, decode is KV_UNSUPPORTED with a hint', () => {
    const shape = { layers: 1, kvHeads: 1, headDim: 16, tokens: 7 };
    const table = fitTransformTable([lowRankKV({ ...shape, tokens: 100 }, 3, 0.1, 8)], 'fp-unknown');
    transformTables.register(table);
    const bytes = encodeWith(table, 1, lowRankKV(shape, 3, 0.1, 8));
    transformTables.clear();
    try {
      expect(readKVHeader(bytes).codec.table).to.equal(table.hash);
      try {
        decodeKVObject(bytes);
        expect.fail('decoded without its table');
      } catch (err) {
        if (!isKdnError(err)) throw err;
        expect(err.code).to.equal('KV_UNSUPPORTED');
        expect(isKdnError(err) && err.hint).to.match(/fetch/);
      }
    } finally {
      transformTables.register(table);
    }
    expect(decodeKVObject(bytes).tensors.tokens).to.equal(7);
  });
});
