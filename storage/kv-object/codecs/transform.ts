import { KdnError } from '../../../common/errors.ts';
import type { KVLayerTensors } from '../types.ts';
import type { LayerCodec, LayerShape } from './codec.ts';
import { sectionWords, slotOf, transformSections, readCode, type TransformSection, type TransformTable } from './transform-table.ts';

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
  /** 2^bits - 1: the largest code. */
  top: Int32Array;
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
    const { rows, mean } = p;
    const { head } = p.section;
    const words = new Uint32Array(p.section.bytes / 4);
    // Four tokens at a time, interleaved, so each basis row is read once for four dot products.
    const x = new Float64Array(4 * D);
    const coeff = new Float64Array(4 * K);
    const writer = new CodeWriter(words);
    for (let t0 = 0; t0 < tokens; t0 += 4) {
      const n = Math.min(4, tokens - t0);
      if (n < 4) x.fill(0);
      for (let i = 0; i < n; i++) {
        const row = ((t0 + i) * H + head) * D;
        // Rounded to f32, as in every object coded so far, so that the same input always gives the same bytes.
        for (let d = 0, q = i; d < D; d++, q += 4) x[q] = Math.fround(src[row + d]! - mean[d]!);
      }
      project(rows, x, D, K, coeff);
      for (let i = 0; i < n; i++) writer.quantizeRow(coeff, i * K, p);
    }
    writer.finish();
    for (let i = 0, o = p.section.offset; i < words.length; i++, o += 4) {
      const v = words[i]!;
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
      top: Int32Array.from(coded, (j) => (1 << lv.bits[pick(j)]!) - 1),
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

/** Beyond every code (2^16 - 1) yet safe to round to an int32. */
const CODE_RANGE = 2 ** 30;

/**
 * Quantizes coefficients (code = clamp(round((c - offset) * (1 / step)), 0, top)) and packs the codes LSB-first, in
 * order, into zeroed u32 words: a section's codes are one bit stream, so whole words are stored once.
 */
class CodeWriter {
  private acc = 0;
  private fill = 0;
  private word = 0;

  constructor(private readonly words: Uint32Array) {}

  /** Codes of one token's coded components, whose coefficients are coeff[at..at + K). */
  quantizeRow(coeff: Float64Array, at: number, p: SectionPlan): void {
    const { bits, top, offset, inverseStep } = p;
    const words = this.words;
    let { acc, fill, word } = this;
    for (let k = 0, c = at, K = bits.length; k < K; k++, c++) {
      const b = bits[k]!;
      const y = (coeff[c]! - offset[k]!) * inverseStep[k]!;
      // round, then clamp to 0..top with integer masks: branches would mispredict on coefficients out of range.
      let code = Math.round(Math.max(-CODE_RANGE, Math.min(y, CODE_RANGE))) | 0;
      code &= ~(code >> 31);
      const over = top[k]! - code;
      code += over & (over >> 31);
      acc |= code << fill;
      fill += b;
      if (fill >= 32) {
        words[word++] = acc;
        fill -= 32;
        // The code's bits that did not fit; none when it ended exactly on the word (b - fill = b shifts them all out).
        acc = code >>> (b - fill);
      }
    }
    this.acc = acc;
    this.fill = fill;
    this.word = word;
  }

  finish(): void {
    if (this.fill > 0) this.words[this.word] = this.acc;
  }
}

/**
 * coeff[i * K + k] = rows[k] . x[i] for four vectors x[i] held interleaved (x[4 * d + i]), two rows at a time:
 * each step of d feeds eight independent sums from six loads. Each sum adds its products in order of d, as the
 * definition does, so the coefficients are exactly those of a plain dot product. An odd last row is paired with
 * itself.
 */
function project(rows: Float32Array, x: Float64Array, D: number, K: number, coeff: Float64Array): void {
  for (let k = 0; k < K; k += 2) {
    const r = k * D;
    const s = k + 1 < K ? r + D : r;
    let a0 = 0;
    let a1 = 0;
    let a2 = 0;
    let a3 = 0;
    let b0 = 0;
    let b1 = 0;
    let b2 = 0;
    let b3 = 0;
    for (let d = 0, q = 0; d < D; d++, q += 4) {
      const u = rows[r + d]!;
      const v = rows[s + d]!;
      const x0 = x[q]!;
      const x1 = x[q + 1]!;
      const x2 = x[q + 2]!;
      const x3 = x[q + 3]!;
      a0 += u * x0;
      a1 += u * x1;
      a2 += u * x2;
      a3 += u * x3;
      b0 += v * x0;
      b1 += v * x1;
      b2 += v * x2;
      b3 += v * x3;
    }
    coeff[k] = a0;
    coeff[K + k] = a1;
    coeff[2 * K + k] = a2;
    coeff[3 * K + k] = a3;
    if (s === r) break;
    coeff[k + 1] = b0;
    coeff[K + k + 1] = b1;
    coeff[2 * K + k + 1] = b2;
    coeff[3 * K + k + 1] = b3;
  }
}
