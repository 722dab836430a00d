import { KdnError } from '../../../common/errors.ts';
import type { KVLayerTensors } from '../types.ts';
import type { LayerCodec, LayerShape } from './codec.ts';
import {
  sectionWords,
  slotOf,
  transformSections,
  writeCode,
  readCode,
  type TransformSection,
  type TransformTable,
} from './transform-table.ts';

/**
 * transform: PCA decorrelation per KV head, then a uniform quantizer per component with a per-level bit allocation
 * (KVTC-style transform coding; ~4x to ~20x below fp16). The table, the block layout and the exact decode rule are
 * in ./transform-table.ts; this is the CPU encoder and a decoder that skips uncoded components.
 *
 * Keys go in and come out before RoPE (objects carry ropeApplied: false; engines rotate at injection).
 * Error: each coefficient errs by at most step / 2 unless it falls outside its quantizer's range (then it is
 * clamped); the basis is orthonormal, so a vector's squared error is the sum of its coefficients' squared errors.
 */

/** One section's quantizers, with uncoded components folded into a base vector. */
interface SectionPlan {
  section: TransformSection;
  slot: number;
  /** mean + sum of basis_j * offset_j over components with 0 bits: what an all-uncoded vector decodes to. */
  base: Float32Array;
  mean: Float32Array;
  /** The coded components' basis rows, back to back: rows[k * D + d]. */
  rows: Float32Array;
  /** Coded components in order, with their bits, step, 1 / step and offset. */
  coded: Int32Array;
  bits: Uint8Array;
  step: Float32Array;
  inverseStep: Float64Array;
  offset: Float32Array;
}

export class TransformCodec implements LayerCodec {
  private readonly plans = new Map<number, SectionPlan[]>();

  constructor(
    readonly table: TransformTable,
    readonly level: number,
  ) {
    if (!Number.isInteger(level) || level < 0 || level >= table.levels.length) {
      throw new KdnError('KV_UNSUPPORTED', `transform level ${level} is not in the table (0..${table.levels.length - 1})`);
    }
  }

  expectedSize(shape: LayerShape, layer?: number): number {
    this.checkShape(shape);
    return transformSections(this.table, this.level, this.layerIndex(layer), shape.tokens).total;
  }

  encode(tensors: KVLayerTensors, shape: LayerShape, layer?: number): Uint8Array {
    this.checkShape(shape);
    const l = this.layerIndex(layer);
    const plans = this.plan(l, shape.tokens);
    const total = plans.reduce((n, p) => n + p.section.bytes, 0);
    const out = new Uint8Array(total);
    for (const p of plans) this.encodeSection(p, p.section.tensor === 0 ? tensors.keys : tensors.values, shape.tokens, out);
    return out;
  }

  decode(bytes: Uint8Array, shape: LayerShape, layer?: number): KVLayerTensors {
    const size = this.expectedSize(shape, layer);
    if (bytes.length !== size) throw new KdnError('KV_CORRUPT', `transform block is ${bytes.length} bytes, expected ${size}`);
    const { tokens, kvHeads: H, headDim: D } = shape;
    const out = [new Float32Array(tokens * H * D), new Float32Array(tokens * H * D)] as const;
    const coeff = new Float32Array(D);
    for (const p of this.plan(this.layerIndex(layer), tokens)) {
      const words = sectionWords(bytes, p.section);
      const target = out[p.section.tensor];
      for (let t = 0; t < tokens; t++) {
        let pos = t * p.section.rowBits;
        for (let k = 0; k < p.coded.length; k++) {
          coeff[k] = readCode(words, pos, p.bits[k]!) * p.step[k]! + p.offset[k]!;
          pos += p.bits[k]!;
        }
        const row = (t * H + p.section.head) * D;
        target.set(p.base, row);
        for (let k = 0; k < p.coded.length; k++) {
          const c = coeff[k]!;
          const b = k * D;
          for (let d = 0; d < D; d++) target[row + d] += c * p.rows[b + d]!;
        }
      }
    }
    return { keys: out[0], values: out[1] };
  }

  private encodeSection(p: SectionPlan, src: Float32Array, tokens: number, out: Uint8Array): void {
    const { headDim: D, kvHeads: H } = this.table;
    const K = p.coded.length;
    const { rows, mean, bits, offset, inverseStep } = p;
    const { head, rowBits } = p.section;
    const words = new Uint32Array(p.section.bytes / 4);
    // Four tokens at a time: each basis row is read once for four dot products.
    const x = new Float32Array(4 * D);
    const coeff = new Float64Array(4 * K);
    for (let t0 = 0; t0 < tokens; t0 += 4) {
      const n = Math.min(4, tokens - t0);
      x.fill(0);
      for (let i = 0; i < n; i++) {
        const row = ((t0 + i) * H + head) * D;
        for (let d = 0; d < D; d++) x[i * D + d] = src[row + d]! - mean[d]!;
      }
      project(rows, x, D, K, coeff);
      for (let i = 0; i < n; i++) {
        let pos = (t0 + i) * rowBits;
        for (let k = 0; k < K; k++) {
          const b = bits[k]!;
          const top = (1 << b) - 1;
          const u = Math.round((coeff[i * K + k]! - offset[k]!) * inverseStep[k]!);
          writeCode(words, pos, b, u < 0 ? 0 : Math.min(u, top));
          pos += b;
        }
      }
    }
    for (let w = 0, o = p.section.offset; w < words.length; w++, o += 4) {
      const v = words[w]!;
      out[o] = v & 0xff;
      out[o + 1] = (v >>> 8) & 0xff;
      out[o + 2] = (v >>> 16) & 0xff;
      out[o + 3] = v >>> 24;
    }
  }

  /** Section layout and quantizers of one layer; the quantizers are cached, the layout depends on `tokens`. */
  private plan(layer: number, tokens: number): SectionPlan[] {
    const layout = transformSections(this.table, this.level, layer, tokens);
    let plans = this.plans.get(layer);
    if (!plans) {
      plans = layout.sections.map((section) => this.sectionPlan(layer, section));
      this.plans.set(layer, plans);
    }
    return plans.map((p, i) => ({ ...p, section: layout.sections[i]! }));
  }

  private sectionPlan(layer: number, section: TransformSection): SectionPlan {
    const { headDim: D, basis, mean } = this.table;
    const lv = this.table.levels[this.level]!;
    const slot = slotOf(this.table, layer, section.tensor, section.head);
    const base = Float32Array.from(mean.subarray(slot * D, (slot + 1) * D));
    const coded: number[] = [];
    for (let j = 0; j < D; j++) {
      const i = slot * D + j;
      if (lv.bits[i]! > 0) coded.push(j);
      else if (lv.offset[i]! !== 0) for (let d = 0; d < D; d++) base[d] += lv.offset[i]! * basis[(slot * D + j) * D + d]!;
    }
    const pick = (j: number): number => slot * D + j;
    const rows = new Float32Array(coded.length * D);
    coded.forEach((j, k) => rows.set(basis.subarray((slot * D + j) * D, (slot * D + j + 1) * D), k * D));
    return {
      section,
      slot,
      base,
      rows,
      mean: mean.subarray(slot * D, (slot + 1) * D),
      coded: Int32Array.from(coded),
      bits: Uint8Array.from(coded, (j) => lv.bits[pick(j)]!),
      step: Float32Array.from(coded, (j) => lv.step[pick(j)]!),
      inverseStep: Float64Array.from(coded, (j) => 1 / lv.step[pick(j)]!),
      offset: Float32Array.from(coded, (j) => lv.offset[pick(j)]!),
    };
  }

  private checkShape(shape: LayerShape): void {
    if (shape.kvHeads !== this.table.kvHeads || shape.headDim !== this.table.headDim) {
      throw new KdnError(
        'KV_MISMATCH',
        `transform table is for ${this.table.kvHeads} KV heads of ${this.table.headDim}; the object has ${shape.kvHeads} of ${shape.headDim}`,
        {
          hint: 'the object names a table of another model',
        },
      );
    }
  }

  private layerIndex(layer: number | undefined): number {
    if (layer === undefined) {
      throw new KdnError('INTERNAL', 'the transform codec needs the layer index: its quantizers differ per layer', {
        hint: "pass the block's layer to expectedSize/encode/decode",
      });
    }
    if (!Number.isInteger(layer) || layer < 0 || layer >= this.table.layers) {
      throw new KdnError('KV_MISMATCH', `layer ${layer} is not in the transform table's ${this.table.layers} layers`);
    }
    return layer;
  }
}

/**
 * coeff[i * K + k] = rows[k] . x[i] for four vectors x[0..3] of length D (x holds them back to back): each basis row
 * is read once for the four dot products, from locals the JIT keeps in registers.
 */
function project(rows: Float32Array, x: Float32Array, D: number, K: number, coeff: Float64Array): void {
  for (let k = 0, r = 0; k < K; k++, r += D) {
    let c0 = 0;
    let c1 = 0;
    let c2 = 0;
    let c3 = 0;
    for (let d = 0; d < D; d++) {
      const b = rows[r + d]!;
      c0 += b * x[d]!;
      c1 += b * x[D + d]!;
      c2 += b * x[2 * D + d]!;
      c3 += b * x[3 * D + d]!;
    }
    coeff[k] = c0;
    coeff[K + k] = c1;
    coeff[2 * K + k] = c2;
    coeff[3 * K + k] = c3;
  }
}
