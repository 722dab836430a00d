import { KdnError } from '../../../common/errors.ts';
import type { KVTensors } from '../types.ts';
import { principalAxes } from './symmetric-eigen.ts';
import { serializeTransformTable, slotOf, type TransformLevel, type TransformTable } from './transform-table.ts';

/**
 * Fits a transform table (./transform-table.ts) from calibration KV: per (layer, tensor, head) a PCA of the head's
 * vectors, then per level a bit allocation over the components. Keys must be before RoPE: rotated keys mix
 * positions into every dimension and do not decorrelate.
 *
 * Step sizes and the allocation use measured distortion, not a Gaussian model: for each component and each bit
 * width the step that minimizes the squared error on the calibration coefficients is searched, and bits go,
 * one at a time, to the component (of any layer, tensor and head) whose relative error drops most: greedy on
 * convex per-component curves, which is the optimal integer allocation for a sum of errors. The total is
 * round(targetBits * elements per token), so each level's size is exact whatever the data; how it splits across
 * layers and heads is the table's (transformSections gives each section's rowBits).
 */

export interface LevelSpec {
  name: string;
  /** Average bits per KV element (fp16 = 16). */
  targetBits: number;
}

/** The levels this build fits: compression vs fp16 of about 4x, 6x, 8x, 12x, 16x and 20x. */
export const TRANSFORM_LEVELS: readonly LevelSpec[] = [
  { name: 'x4', targetBits: 4 },
  { name: 'x6', targetBits: 16 / 6 },
  { name: 'x8', targetBits: 2 },
  { name: 'x12', targetBits: 16 / 12 },
  { name: 'x16', targetBits: 1 },
  { name: 'x20', targetBits: 0.8 },
];

/** The level objects use unless configured otherwise: the smallest one that met the quality goal (docs/). */
export const DEFAULT_TRANSFORM_LEVEL = 2;

/** Widest code the allocation hands out; past it the error is far below what any level's budget buys. */
const FIT_MAX_BITS = 12;
/** Bit widths whose step is searched over the whole grid; wider ones search around the last grid result. */
const SEARCHED_BITS = 6;
/** Calibration vectors per head used to fit steps; more only slows fitting (the PCA uses all of them). */
const STEP_SAMPLES = 4096;
/** Candidate steps, as multiples of the component's standard deviation times 2^-bits: a coarse grid, then halves. */
const STEP_GRID = Array.from({ length: 13 }, (_, i) => 1 + i * 0.5);

/** One slot's fit: PCA and, per component and bit width, the best step and its mean squared error. */
interface SlotFit {
  mean: Float64Array;
  /** basis[j * D + d], rows by decreasing variance */
  basis: Float64Array;
  /** errors[j][b] for b = 0..FIT_MAX_BITS, steps[j][b] (steps[j][0] unused) */
  errors: Float64Array[];
  steps: Float64Array[];
}

/** Fits a table from calibration tensors (all of one model, keys before RoPE). */
export function fitTransformTable(
  samples: readonly KVTensors[],
  modelFingerprint: string,
  levels: readonly LevelSpec[] = TRANSFORM_LEVELS,
): TransformTable {
  const first = samples[0];
  if (!first) throw new KdnError('INVALID_ARGUMENT', 'fitting a transform table needs at least one calibration sample');
  const { layers, kvHeads, headDim: D } = first;
  for (const s of samples) {
    if (s.ropeApplied)
      throw new KdnError('INVALID_ARGUMENT', 'transform calibration keys must be before RoPE', { hint: 'unrotate exported keys first' });
    if (s.layers !== layers || s.kvHeads !== kvHeads || s.headDim !== D)
      throw new KdnError('INVALID_ARGUMENT', 'calibration samples differ in shape');
  }
  const slots = layers * 2 * kvHeads;
  const mean = new Float32Array(slots * D);
  const basis = new Float32Array(slots * D * D);
  const out: TransformLevel[] = levels.map((l) => ({
    name: l.name,
    targetBits: l.targetBits,
    bits: new Uint8Array(slots * D),
    step: new Float32Array(slots * D),
    offset: new Float32Array(slots * D),
  }));
  const fits: SlotFit[] = [];
  for (let l = 0; l < layers; l++) {
    for (const tensor of [0, 1] as const) {
      for (let h = 0; h < kvHeads; h++) {
        const slot = slotOf({ kvHeads }, l, tensor, h);
        const fit = fitSlot(gatherVectors(samples, l, tensor, h), D);
        mean.set(fit.mean, slot * D);
        basis.set(fit.basis, slot * D * D);
        fits[slot] = fit;
      }
    }
  }
  levels.forEach((spec, q) => allocate(out[q]!, fits, Math.round(spec.targetBits * D * slots)));
  return serializeTransformTable({ modelFingerprint, layers, kvHeads, headDim: D, mean, basis, levels: out });
}

/** Head h's vectors of one tensor of layer l over every sample, as rows of D. */
function gatherVectors(samples: readonly KVTensors[], l: number, tensor: 0 | 1, h: number): Float64Array[] {
  const rows: Float64Array[] = [];
  for (const s of samples) {
    const src = tensor === 0 ? s.perLayer[l]!.keys : s.perLayer[l]!.values;
    for (let t = 0; t < s.tokens; t++) {
      const at = (t * s.kvHeads + h) * s.headDim;
      rows.push(Float64Array.from(src.subarray(at, at + s.headDim)));
    }
  }
  return rows;
}

function fitSlot(rows: Float64Array[], D: number): SlotFit {
  const mean = new Float64Array(D);
  for (const r of rows) for (let d = 0; d < D; d++) mean[d] += r[d]! / rows.length;
  const cov = new Float64Array(D * D);
  for (const r of rows) {
    for (let a = 0; a < D; a++) {
      const xa = r[a]! - mean[a]!;
      for (let b = a; b < D; b++) cov[a * D + b] += xa * (r[b]! - mean[b]!);
    }
  }
  for (let a = 0; a < D; a++) {
    for (let b = a; b < D; b++) {
      cov[a * D + b] /= rows.length;
      cov[b * D + a] = cov[a * D + b]!;
    }
  }
  const basis = principalAxes(cov, D);
  const step = Math.max(1, Math.floor(rows.length / STEP_SAMPLES));
  const coeffs: Float64Array[] = Array.from({ length: D }, () => new Float64Array(Math.ceil(rows.length / step)));
  for (let i = 0, n = 0; i < rows.length; i += step, n++) {
    const r = rows[i]!;
    for (let j = 0; j < D; j++) {
      let c = 0;
      for (let d = 0; d < D; d++) c += basis[j * D + d]! * (r[d]! - mean[d]!);
      coeffs[j]![n] = c;
    }
  }
  const errors: Float64Array[] = [];
  const steps: Float64Array[] = [];
  for (const c of coeffs) {
    const curve = quantizerCurve(c);
    errors.push(curve.errors);
    steps.push(curve.steps);
  }
  return { mean, basis, errors, steps };
}

/** Per bit width, the step of the centred uniform quantizer with least squared error on `c`, and that error. */
function quantizerCurve(c: Float64Array): { errors: Float64Array; steps: Float64Array } {
  const errors = new Float64Array(FIT_MAX_BITS + 1);
  const steps = new Float64Array(FIT_MAX_BITS + 1);
  let sq = 0;
  for (const x of c) sq += x * x;
  errors[0] = sq / c.length;
  const sd = Math.sqrt(errors[0]!);
  let searchedK = 0;
  for (let b = 1; b <= FIT_MAX_BITS; b++) {
    errors[b] = errors[0]!;
    if (sd === 0) continue;
    const levels = (1 << b) - 1;
    let bestK = 0;
    const tryK = (k: number): void => {
      const s = (k * sd) / (1 << b);
      const e = quantError(c, s, levels);
      if (e < errors[b]!) {
        errors[b] = e;
        steps[b] = s;
        bestK = k;
      }
    };
    if (b > SEARCHED_BITS && searchedK > 0) {
      // Fine quantizers: the best range in standard deviations barely moves, so only its neighbourhood is tried.
      for (const k of [searchedK - 0.5, searchedK, searchedK + 0.5]) tryK(k);
    } else {
      for (const k of STEP_GRID) tryK(k);
      if (bestK > 0) for (const k of [bestK - 0.25, bestK + 0.25]) tryK(k);
      searchedK = bestK;
    }
    // More bits never hurts: keep the curve monotone so the greedy allocation stays valid.
    if (errors[b]! > errors[b - 1]!) errors[b] = errors[b - 1]!;
  }
  return { errors, steps };
}

function quantError(c: Float64Array, step: number, levels: number): number {
  const offset = (-levels / 2) * step;
  let e = 0;
  for (const x of c) {
    let u = Math.round((x - offset) / step);
    if (u < 0) u = 0;
    else if (u > levels) u = levels;
    const d = x - (u * step + offset);
    e += d * d;
  }
  return e / c.length;
}

/**
 * Greedy integer bit allocation of `budget` bits over every component of every slot (all layers, keys and values),
 * written into `level`. A slot's error counts relative to its total variance: layers differ in scale by orders of
 * magnitude, and relative error is what the fidelity benchmark tracked best: one budget per slot, values weighted
 * 0.5x, 2x or 3x against keys, and more weight on the first or the last layers all did worse on kdn-demo (the
 * language model shipped before kdn-reader; docs/ARCHITECTURE.md has the figures).
 */
function allocate(level: TransformLevel, fits: SlotFit[], budget: number): void {
  const D = fits[0]!.errors.length;
  const weight = fits.map((f) => {
    const total = f.errors.reduce((sum, e) => sum + e[0]!, 0);
    return 1 / (total > 0 ? total : 1);
  });
  const bits = new Uint8Array(fits.length * D);
  const gainOf = (i: number): number => {
    const b = bits[i]!;
    if (b >= FIT_MAX_BITS) return -1;
    const e = fits[Math.floor(i / D)]!.errors[i % D]!;
    return (e[b]! - e[b + 1]!) * weight[Math.floor(i / D)]!;
  };
  const heap = new GainHeap();
  for (let i = 0; i < bits.length; i++) heap.push(i, gainOf(i));
  for (let spent = 0; spent < budget && heap.size > 0; spent++) {
    const i = heap.pop();
    bits[i]++;
    const g = gainOf(i);
    if (g >= 0) heap.push(i, g);
  }
  for (let i = 0; i < bits.length; i++) {
    const b = bits[i]!;
    level.bits[i] = b;
    if (b === 0) continue;
    const step = fits[Math.floor(i / D)]!.steps[i % D]![b]!;
    const s = step > 0 ? step : 1;
    level.step[i] = s;
    level.offset[i] = (-((1 << b) - 1) / 2) * s;
  }
}

/** Max-heap of (component, gain); ties go to the lower component index, so fits are deterministic. */
class GainHeap {
  private readonly ids: number[] = [];
  private readonly gains: number[] = [];

  get size(): number {
    return this.ids.length;
  }

  push(id: number, gain: number): void {
    this.ids.push(id);
    this.gains.push(gain);
    let i = this.ids.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!this.before(i, parent)) break;
      this.swap(i, parent);
      i = parent;
    }
  }

  pop(): number {
    const top = this.ids[0]!;
    const lastId = this.ids.pop()!;
    const lastGain = this.gains.pop()!;
    if (this.ids.length > 0) {
      this.ids[0] = lastId;
      this.gains[0] = lastGain;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < this.ids.length && this.before(l, m)) m = l;
        if (r < this.ids.length && this.before(r, m)) m = r;
        if (m === i) break;
        this.swap(i, m);
        i = m;
      }
    }
    return top;
  }

  private before(a: number, b: number): boolean {
    return this.gains[a]! > this.gains[b]! || (this.gains[a] === this.gains[b] && this.ids[a]! < this.ids[b]!);
  }

  private swap(a: number, b: number): void {
    [this.ids[a], this.ids[b]] = [this.ids[b]!, this.ids[a]!];
    [this.gains[a], this.gains[b]] = [this.gains[b]!, this.gains[a]!];
  }
}
