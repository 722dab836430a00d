/**
 * Seeded transform-codec tables and blocks for the GPU expansion tests, with a direct reading of the format as the
 * reference decode.
 */
import type { TransformTableSource } from '../../engine-adapter/webgpu/gpu-transform-table.ts';
import { randomArray } from './webgpu-support.ts';

export interface TestTable extends TransformTableSource {
  means: Float32Array[];
  bases: Float32Array[];
  /** [level][head]: bits, step, offset. */
  quants: { bits: number[]; step: Float32Array; offset: Float32Array }[][];
}

/** Orthonormal rows by Gram-Schmidt over seeded random vectors. */
function orthonormal(d: number, seed: number): Float32Array {
  const rows = new Float64Array(d * d);
  const r = randomArray(d * d, seed);
  for (let j = 0; j < d; j++) {
    const v = Array.from(r.subarray(j * d, (j + 1) * d), Number);
    for (let k = 0; k < j; k++) {
      let dot = 0;
      for (let c = 0; c < d; c++) dot += v[c]! * rows[k * d + c]!;
      for (let c = 0; c < d; c++) v[c]! -= dot * rows[k * d + c]!;
    }
    const norm = Math.hypot(...v);
    for (let c = 0; c < d; c++) rows[j * d + c] = v[c]! / norm;
  }
  return Float32Array.from(rows);
}

/**
 * A table whose levels' bits follow `bitsOf(level, head, component)` (0..16: zero-bit components inside and past
 * the rank, codes straddling words).
 */
export function testTable(shape: { layers: number; kvHeads: number; headDim: number }, levels: number, seed: number,
  bitsOf: (level: number, head: number, j: number) => number): TestTable {
  const { layers, kvHeads, headDim: d } = shape;
  const heads = layers * 2 * kvHeads;
  const means = Array.from({ length: heads }, (_, i) => randomArray(d, seed + 7 * i, 0.5));
  const bases = Array.from({ length: heads }, (_, i) => orthonormal(d, seed + 7 * i + 1));
  const quants = Array.from({ length: levels }, (_, q) =>
    Array.from({ length: heads }, (_, i) => ({
      bits: Array.from({ length: d }, (_, j) => bitsOf(q, i, j)),
      step: randomArray(d, seed + 7 * i + 2 + q * 1000, 0.01).map((x) => Math.abs(x) + 1e-4),
      offset: randomArray(d, seed + 7 * i + 3 + q * 1000, 0.3),
    })));
  const at = (l: number, s: number, h: number): number => (l * 2 + s) * kvHeads + h;
  return {
    layers, kvHeads, headDim: d, levels, means, bases, quants,
    mean: (l, s, h) => means[at(l, s, h)]!,
    basis: (l, s, h) => bases[at(l, s, h)]!,
    quant: (q, l, s, h) => quants[q]![at(l, s, h)]!,
  };
}

/** Seeded codes for one layer block: [section][token][component], each below 2^bits. */
export function randomCodes(table: TestTable, level: number, layer: number, tokens: number, seed: number): number[][][] {
  const { kvHeads, headDim: d } = table;
  return Array.from({ length: 2 * kvHeads }, (_, g) => {
    const q = table.quants[level]![layer * 2 * kvHeads + g]!;
    const r = randomArray(tokens * d, seed + g, 1);
    return Array.from({ length: tokens }, (_, t) => Array.from({ length: d }, (_, j) => Math.floor(Math.abs(r[t * d + j]!) * 2 ** q.bits[j]!) % 2 ** q.bits[j]!));
  });
}

/** The block's bytes: per section the codes LSB-first in little-endian u32 words, each section whole words. */
export function packBlock(table: TestTable, level: number, layer: number, codes: number[][][]): Uint8Array {
  const words: number[] = [];
  codes.forEach((section, g) => {
    const bits = table.quants[level]![layer * 2 * table.kvHeads + g]!.bits;
    const rowBits = bits.reduce((a, b) => a + b, 0);
    const base = words.length;
    const n = Math.ceil((section.length * rowBits) / 32);
    for (let i = 0; i < n; i++) words.push(0);
    section.forEach((row, t) => {
      let bit = t * rowBits;
      row.forEach((u, j) => {
        for (let b = 0; b < bits[j]!; b++, bit++) if ((u >>> b) & 1) words[base + (bit >>> 5)] = (words[base + (bit >>> 5)]! | (1 << (bit & 31))) >>> 0;
      });
    });
  });
  return new Uint8Array(Uint32Array.from(words).buffer);
}

/** Reference decode of one block's codes: keys and values, [tokens][kvHeads][headDim] each, in f64 then f32. */
export function referenceDecode(table: TestTable, level: number, layer: number, codes: number[][][]): { keys: Float32Array; values: Float32Array } {
  const { kvHeads: H, headDim: d } = table;
  const tokens = codes[0]!.length;
  const out = [new Float32Array(tokens * H * d), new Float32Array(tokens * H * d)];
  codes.forEach((section, g) => {
    const s = Math.floor(g / H);
    const h = g % H;
    const head = layer * 2 * H + g;
    const q = table.quants[level]![head]!;
    const basis = table.bases[head]!;
    section.forEach((row, t) => {
      for (let c = 0; c < d; c++) {
        let x = table.means[head]![c]!;
        for (let j = 0; j < d; j++) x += basis[j * d + c]! * (row[j]! * q.step[j]! + q.offset[j]!);
        out[s]![(t * H + h) * d + c] = x;
      }
    });
  });
  return { keys: out[0]!, values: out[1]! };
}
