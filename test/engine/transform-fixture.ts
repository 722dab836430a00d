/** Seeded transform-codec tables and blocks for the GPU expansion tests (codes drawn directly, not fitted). */
import {
  serializeTransformTable,
  slotOf,
  transformSections,
  writeCode,
  type TransformTable,
} from '../../storage/kv-object/codecs/transform-table.ts';
import { randomArray } from './webgpu-support.ts';

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

/** A table whose levels give component j of slot `slot` bitsOf(level, slot, j) bits (0..16). */
export function testTable(
  shape: { layers: number; kvHeads: number; headDim: number; modelFingerprint?: string },
  levels: number,
  seed: number,
  bitsOf: (level: number, slot: number, j: number) => number,
): TransformTable {
  const { layers, kvHeads, headDim: d } = shape;
  const slots = layers * 2 * kvHeads;
  const basis = new Float32Array(slots * d * d);
  for (let s = 0; s < slots; s++) basis.set(orthonormal(d, seed + 7 * s), s * d * d);
  return serializeTransformTable({
    modelFingerprint: shape.modelFingerprint ?? 'test-model',
    layers,
    kvHeads,
    headDim: d,
    mean: randomArray(slots * d, seed + 1, 0.5),
    basis,
    levels: Array.from({ length: levels }, (_, q) => ({
      name: `l${q}`,
      targetBits: 4,
      bits: Uint8Array.from({ length: slots * d }, (_, i) => bitsOf(q, Math.floor(i / d), i % d)),
      step: randomArray(slots * d, seed + 2 + q, 0.01).map((x) => Math.abs(x) + 1e-4),
      offset: randomArray(slots * d, seed + 3 + q, 0.3),
    })),
  });
}

/** A layer block of seeded codes (each below 2^bits) in the codec's layout. */
export function randomBlock(table: TransformTable, level: number, layer: number, tokens: number, seed: number): Uint8Array {
  const { headDim: d } = table;
  const lv = table.levels[level]!;
  const layout = transformSections(table, level, layer, tokens);
  const words = new Uint32Array(layout.total / 4);
  const r = randomArray(layout.sections.length * tokens * d, seed);
  layout.sections.forEach((section, g) => {
    const slot = slotOf(table, layer, section.tensor, section.head);
    const sectionWords = words.subarray(section.offset / 4, (section.offset + section.bytes) / 4);
    for (let t = 0; t < tokens; t++) {
      let pos = t * section.rowBits;
      for (let j = 0; j < d; j++) {
        const bits = lv.bits[slot * d + j]!;
        const code = Math.floor(Math.abs(r[(g * tokens + t) * d + j]!) * 2 ** bits) % 2 ** bits;
        writeCode(sectionWords, pos, bits, code);
        pos += bits;
      }
    }
  });
  return new Uint8Array(words.buffer);
}
