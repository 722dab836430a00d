import { expect } from 'chai';
import {
  codecFor,
  decodeTransformBlock,
  readCode,
  sectionWords,
  serializeTransformTable,
  slotOf,
  transformSections,
  transformTables,
  writeCode,
  type TransformLevel,
  type TransformTable,
} from '../../storage/kv-object/index.ts';
import type { KVLayerTensors } from '../../storage/kv-object/types.ts';
import { gaussian, rng } from '../../fixtures/kv-data.ts';
import { roundClamped } from '../../storage/kv-object/codecs/transform.ts';

/**
 * The transform encoder's blocks, byte for byte, against plain loops over the definition in transform-table.ts with
 * the encoder's exact arithmetic: x - mean rounded to f32, each coefficient summed in f64 in order of d, code =
 * clamp(round((c - offset) * (1 / step)), 0, 2^bits - 1). Shapes are odd (head dims, token counts not a multiple of
 * four, odd counts of coded components) and the bit widths run from 0 to 16, so codes straddle words.
 */

interface Dims {
  layers: number;
  kvHeads: number;
  headDim: number;
  tokens: number;
}

/** Random bits per component: every width 0..16, many zeros; steps and offsets put ~20% of codes out of range. */
function randomLevel(name: string, slots: number, D: number, random: () => number, bitsOf: () => number): TransformLevel {
  const bits = Uint8Array.from({ length: slots * D }, bitsOf);
  const step = Float32Array.from(bits, (b) => (5 / 2 ** b) * (0.5 + random()));
  const offset = Float32Array.from(bits, (b, i) => -((2 ** b - 1) * step[i]!) / 2 + (random() - 0.5));
  return { name, targetBits: 4, bits, step, offset };
}

function randomTable(dims: Dims, seed: number): TransformTable {
  const random = rng(seed);
  const normal = gaussian(random);
  const { layers, kvHeads, headDim: D } = dims;
  const slots = layers * 2 * kvHeads;
  const mean = Float32Array.from({ length: slots * D }, () => normal());
  const basis = Float32Array.from({ length: slots * D * D }, () => normal() / Math.sqrt(D));
  const mixed = (): number => (random() < 0.4 ? 0 : Math.floor(random() * 17));
  const levels = [
    randomLevel('mixed', slots, D, random, mixed),
    randomLevel('all', slots, D, random, () => 1 + Math.floor(random() * 16)),
    randomLevel('wide', slots, D, random, () => (random() < 0.5 ? 16 : 15)),
    randomLevel('sparse', slots, D, random, () => (random() < 0.1 ? 3 : 0)),
    randomLevel('none', slots, D, random, () => 0),
  ];
  return transformTables.register(
    serializeTransformTable({ modelFingerprint: `fp-encode-${seed}`, layers, kvHeads, headDim: D, mean, basis, levels }),
  );
}

function referenceBlock(table: TransformTable, level: number, layer: number, tokens: number, src: KVLayerTensors): Uint8Array {
  const { kvHeads: H, headDim: D, basis, mean } = table;
  const lv = table.levels[level]!;
  const layout = transformSections(table, level, layer, tokens);
  const out = new Uint8Array(layout.total);
  const view = new DataView(out.buffer);
  for (const section of layout.sections) {
    const slot = slotOf(table, layer, section.tensor, section.head);
    const x = section.tensor === 0 ? src.keys : src.values;
    const words = new Uint32Array(section.bytes / 4);
    for (let t = 0; t < tokens; t++) {
      let pos = t * section.rowBits;
      for (let j = 0; j < D; j++) {
        const i = slot * D + j;
        const bits = lv.bits[i]!;
        if (bits === 0) continue;
        let c = 0;
        for (let d = 0; d < D; d++) c += basis[i * D + d]! * Math.fround(x[(t * H + section.head) * D + d]! - mean[slot * D + d]!);
        const u = Math.round((c - lv.offset[i]!) * (1 / lv.step[i]!));
        writeCode(words, pos, bits, Math.max(0, Math.min(u, 2 ** bits - 1)));
        pos += bits;
      }
    }
    words.forEach((w, k) => view.setUint32(section.offset + 4 * k, w, true));
  }
  return out;
}

/**
 * The CPU decoder's exact arithmetic in plain loops: uncoded components folded into an f32 base (in order of j), each
 * coded coefficient rounded to f32, each output summed in order of the coded components with an f32 rounding after
 * every term.
 */
function f32Block(table: TransformTable, level: number, layer: number, tokens: number, bytes: Uint8Array): KVLayerTensors {
  const { kvHeads: H, headDim: D, basis, mean } = table;
  const lv = table.levels[level]!;
  const out = [new Float32Array(tokens * H * D), new Float32Array(tokens * H * D)] as const;
  for (const section of transformSections(table, level, layer, tokens).sections) {
    const slot = slotOf(table, layer, section.tensor, section.head);
    const base = Float32Array.from(mean.subarray(slot * D, (slot + 1) * D));
    const coded: number[] = [];
    for (let j = 0; j < D; j++) {
      const i = slot * D + j;
      if (lv.bits[i]! > 0) coded.push(i);
      else if (lv.offset[i]! !== 0) for (let d = 0; d < D; d++) base[d] += lv.offset[i]! * basis[i * D + d]!;
    }
    const words = sectionWords(bytes, section);
    for (let t = 0; t < tokens; t++) {
      let pos = t * section.rowBits;
      const c = coded.map((i) => {
        const code = readCode(words, pos, lv.bits[i]!);
        pos += lv.bits[i]!;
        return Math.fround(code * lv.step[i]! + lv.offset[i]!);
      });
      for (let d = 0; d < D; d++) {
        let x = base[d]!;
        coded.forEach((i, k) => {
          x = Math.fround(x + c[k]! * basis[i * D + d]!);
        });
        out[section.tensor][(t * H + section.head) * D + d] = x;
      }
    }
  }
  return { keys: out[0], values: out[1] };
}

/** Inputs spread so that some coefficients land below and above every quantizer's range. */
function randomLayer(dims: Dims, random: () => number): KVLayerTensors {
  const normal = gaussian(random);
  const n = dims.tokens * dims.kvHeads * dims.headDim;
  const draw = (): number => normal() * (random() < 0.1 ? 30 : 3);
  return { keys: Float32Array.from({ length: n }, draw), values: Float32Array.from({ length: n }, draw) };
}

describe('kv-object/transform encoder', () => {
  const shapes: Dims[] = [
    { layers: 1, kvHeads: 1, headDim: 1, tokens: 1 },
    { layers: 2, kvHeads: 3, headDim: 5, tokens: 6 },
    { layers: 1, kvHeads: 2, headDim: 7, tokens: 13 },
    { layers: 2, kvHeads: 1, headDim: 33, tokens: 4 },
    { layers: 1, kvHeads: 2, headDim: 24, tokens: 31 },
    { layers: 1, kvHeads: 1, headDim: 130, tokens: 9 },
  ];

  it('rounds codes as Math.round does, where v + 0.5 itself rounds up to the next integer too', () => {
    // The largest doubles below n + 0.5: adding 0.5 rounds them up to n + 1, which Math.round does not.
    const bits = new Float64Array(1);
    const pattern = new BigUint64Array(bits.buffer);
    const below = (x: number): number => {
      bits[0] = x;
      pattern[0]! -= 1n;
      return bits[0]!;
    };
    const edges = [0, 0.5, 1, 2.5, 65535, 0.49999999999999994, 1.4999999999999998, 2.4999999999999996, 65534.49999999999];
    for (let n = 0; n < 70_000; n += 997) edges.push(n + 0.5, below(n + 0.5), n, below(n + 1));
    const random = rng(7);
    for (let i = 0; i < 100_000; i++) edges.push(random() * 70_000);
    for (const v of edges) expect(roundClamped(v), `round(${v})`).to.equal(Math.round(v));
  });

  shapes.forEach((dims, s) => {
    it(`blocks equal the plain reference byte for byte, ${dims.kvHeads} heads of ${dims.headDim}, ${dims.tokens} tokens`, () => {
      const table = randomTable(dims, 100 + s);
      const random = rng(200 + s);
      const shape = { tokens: dims.tokens, kvHeads: dims.kvHeads, headDim: dims.headDim };
      for (let layer = 0; layer < dims.layers; layer++) {
        const src = randomLayer(dims, random);
        for (let level = 0; level < table.levels.length; level++) {
          const codec = codecFor({ name: 'transform', lz4: false, table: table.hash, level });
          const got = codec.encode(src, shape, layer);
          const want = referenceBlock(table, level, layer, dims.tokens, src);
          const at = got.findIndex((b, i) => b !== want[i]);
          expect(got.length, `level ${level} layer ${layer} size`).to.equal(want.length);
          expect(at, `level ${level} layer ${layer}: first differing byte`).to.equal(-1);
          // And the codec's own decoder reads them as the reference decoder does, float for float as its plain loops do.
          const ref = decodeTransformBlock(table, level, layer, dims.tokens, got);
          const out = codec.decode(got, shape, layer);
          const exact = f32Block(table, level, layer, dims.tokens, got);
          for (const kind of ['keys', 'values'] as const) {
            const at = out[kind].findIndex((v, i) => !Object.is(v, exact[kind][i]));
            expect(at, `level ${level} layer ${layer} ${kind}: first float unlike the plain f32 decoder`).to.equal(-1);
            out[kind].forEach((v, i) => {
              if (!(Math.abs(v - ref[kind][i]!) <= 1e-4 * (1 + Math.abs(ref[kind][i]!)))) {
                expect.fail(`level ${level} layer ${layer} ${kind}[${i}]: decoded ${v} vs reference ${ref[kind][i]}`);
              }
            });
          }
        }
      }
    });
  });
});
