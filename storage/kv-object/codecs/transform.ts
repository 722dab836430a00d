import { KdnError } from '../../../common/errors.ts';
import type { KVLayerTensors } from '../types.ts';
import type { LayerCodec, LayerShape } from './codec.ts';
import { projector, unprojector } from './transform-simd.ts';
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
  head: HeadPlan;
}

/** A head's quantizers at the codec's level, cached per layer; the basis in the layouts each direction reads. */
interface HeadPlan {
  slot: number;
  /** mean + sum of basis_j * offset_j over components with 0 bits: what an all-uncoded vector decodes to. */
  base: Float32Array;
  mean: Float32Array;
  /** The slot's whole basis (a view of the table's), basis[j * D + d]. */
  basis: Float32Array;
  /** The coded components' basis rows as the projector reads them (groupRows). Built on first encode. */
  groups?: Float32Array;
  /** The same rows transposed as the unprojector reads them (columnGroups), and base padded alike. Built on first decode. */
  columns?: Float32Array;
  paddedBase?: Float32Array;
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
  private readonly plans = new Map<number, HeadPlan[]>();

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
    for (const p of this.plan(this.layerIndex(layer), tokens)) this.decodeSection(p, bytes, tokens, out[p.section.tensor]);
    return { keys: out[0], values: out[1] };
  }

  /** Four tokens at a time, as encodeSection: their dequantized coefficients into the kernel, their vectors out. */
  private decodeSection(p: SectionPlan, bytes: Uint8Array, tokens: number, target: Float32Array): void {
    const { headDim: D, kvHeads: H } = this.table;
    const { head, section } = p;
    const K = head.coded.length;
    const padded = (D + 3) & ~3;
    const words = sectionWords(bytes, section);
    head.columns ??= columnGroups(head, D);
    head.paddedBase ??= Float32Array.from({ length: padded }, (_, d) => (d < D ? head.base[d]! : 0));
    const { c, out, run } = unprojector(head.columns, head.paddedBase, padded, K);
    for (let t0 = 0; t0 < tokens; t0 += 4) {
      const n = Math.min(4, tokens - t0);
      for (let i = 0; i < n; i++) dequantizeRow(words, (t0 + i) * section.rowBits, head, c, i);
      run();
      for (let i = 0; i < n; i++) target.set(out.subarray(i * padded, i * padded + D), ((t0 + i) * H + section.head) * D);
    }
  }

  private encodeSection(p: SectionPlan, src: Float32Array, tokens: number, out: Uint8Array): void {
    const { headDim: D, kvHeads: H } = this.table;
    const { head, section } = p;
    const { mean } = head;
    const groups = (head.groups ??= groupRows(head, D));
    const words = new Uint32Array(section.bytes / 4);
    // Four tokens at a time, interleaved, so each basis row is read once for four dot products. K is padded with
    // zero rows to a multiple of four; their coefficients are never read.
    const stride = groups.length / D;
    const { x, coeff, run } = projector(groups, D, stride);
    const writer = new CodeWriter(words);
    for (let t0 = 0; t0 < tokens; t0 += 4) {
      const n = Math.min(4, tokens - t0);
      if (n < 4) x.fill(0);
      for (let i = 0; i < n; i++) {
        const row = ((t0 + i) * H + section.head) * D;
        // Rounded to f32, as in every object coded so far, so that the same input always gives the same bytes.
        for (let d = 0, q = i; d < D; d++, q += 4) x[q] = Math.fround(src[row + d]! - mean[d]!);
      }
      run();
      for (let i = 0; i < n; i++) writer.quantizeRow(coeff, i * stride, head);
    }
    writer.finish();
    for (let i = 0, o = section.offset; i < words.length; i++, o += 4) {
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
    let heads = this.plans.get(layer);
    if (!heads) {
      heads = layout.sections.map((section) => this.headPlan(layer, section));
      this.plans.set(layer, heads);
    }
    return heads.map((head, i) => ({ head, section: layout.sections[i]! }));
  }

  private headPlan(layer: number, section: TransformSection): HeadPlan {
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
    return {
      slot,
      base,
      mean: mean.subarray(slot * D, (slot + 1) * D),
      basis: basis.subarray(slot * D * D, (slot + 1) * D * D),
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
  quantizeRow(coeff: Float64Array, at: number, p: HeadPlan): void {
    const { bits, top, offset, inverseStep } = p;
    const words = this.words;
    let { acc, fill, word } = this;
    for (let k = 0, c = at, K = bits.length; k < K; k++, c++) {
      const b = bits[k]!;
      const y = (coeff[c]! - offset[k]!) * inverseStep[k]!;
      // Clamping before rounding gives the same code (round is monotonic and 0 and top are integers).
      const code = roundClamped(Math.min(Math.max(y, 0), top[k]!));
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
 * Math.round(v) for 0 <= v < 2^31 (a clamped code), without Math.round's branch on the fraction, which real
 * coefficients take either way at random (a mispredicted branch every other component made quantizing most of an
 * encode's time): truncating v + 0.5 rounds half up, except where that sum itself rounded up to the next integer
 * (v just below n + 0.5), which the test undoes; that branch is almost never taken, so it is predicted.
 */
export function roundClamped(v: number): number {
  const n = (v + 0.5) | 0;
  return n - 0.5 > v ? n - 1 : n;
}

/** Token i's dequantized coefficients, as f32 values, into c[4 * k + i]; its codes start at bit `pos`. */
function dequantizeRow(words: Uint32Array, pos: number, p: HeadPlan, c: Float64Array, i: number): void {
  const { bits, step, offset } = p;
  for (let k = 0, q = i, K = bits.length; k < K; k++, q += 4) {
    const b = bits[k]!;
    c[q] = Math.fround(readCode(words, pos, b) * step[k]! + offset[k]!);
    pos += b;
  }
}

/** HeadPlan.groups: the coded rows four by four, interleaved (groups[(k & ~3) * D + 4 * d + (k & 3)]), zeros after the last. */
function groupRows(p: HeadPlan, D: number): Float32Array {
  const K = p.coded.length;
  const groups = new Float32Array(((K + 3) & ~3) * D);
  for (let k = 0; k < K; k++) {
    const row = p.coded[k]! * D;
    for (let d = 0, o = (k & ~3) * D + (k & 3); d < D; d++, o += 4) groups[o] = p.basis[row + d]!;
  }
  return groups;
}

/**
 * HeadPlan.columns: the coded rows transposed, four outputs at a time (columns[(d & ~3) * K + 4 * k + (d & 3)] is row
 * k at d), D padded with zeros to a multiple of four.
 */
function columnGroups(p: HeadPlan, D: number): Float32Array {
  const K = p.coded.length;
  const columns = new Float32Array(((D + 3) & ~3) * K);
  for (let k = 0; k < K; k++) {
    const row = p.coded[k]! * D;
    for (let d = 0; d < D; d++) columns[(d & ~3) * K + 4 * k + (d & 3)] = p.basis[row + d]!;
  }
  return columns;
}
