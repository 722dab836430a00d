/**
 * A study: what an entropy-coding stage after the transform codec would buy. The transform codec (PCA per KV
 * head, then a fixed-rate uniform quantizer per component, storage/kv-object/codecs/transform*.ts) stores every code
 * in its allocated bits; this measures, on real prefix-chained KV of the shipped model over the fidelity benchmark's
 * contexts (bench/fidelity.ts: held-out documents cut into --chunk token chunks, `document` and `composed` sets):
 *
 * 1. Rate of each level's codes under entropy coding, per component (slot (layer, K/V, head) x PCA component), as
 *    bytes per token (fp16 raw is 4096 on kdn-reader, 3072 on kdn-demo, where entropy-study.json was measured):
 *      fixed             today's bytes (sum of the layer blocks' u32-padded sections)
 *      o0_static         order-0, frequency table per component fitted on the shipped calibration text's codes
 *                        (stored once per model with the transform table, so nothing per object): cross-entropy of
 *                        the measured codes under it (add-1/2 smoothing); what a static-table rANS would spend
 *      o0_static_width   as o0_static with one table per bit width (all components of that width pooled)
 *      o0_insample       order-0 empirical entropy of the measured codes themselves (no table cost: a lower bound)
 *      o0_adaptive       per object (chunk) and component: the chunk's empirical entropy plus its frequency table
 *                        sent in the object (range, then Elias-gamma of count + 1 per symbol in range)
 *      delta_*           the same for CacheGen-style token deltas: code(t) - code(t - 1) per component; a chunk's
 *                        first token is coded as its delta from the code of coefficient 0
 *      *_rans columns    the static variants plus interleaved rANS state flushes: 4 lanes x 4 bytes per layer block
 * 2. For each byte budget (fixed bytes of x4 .. x16), the finest level whose entropy-coded bytes fit in it, and the
 *    fidelity of every level (table fitted as kdn fits it on the calibration text, with extra levels between the
 *    shipped ones; the shipped levels' allocations are identical, as each level is allocated on its own).
 * 3. Entropy-coded uniform scalar quantization (ECSQ, no clamping): code = round(c / step) with one step per slot,
 *    step = lambda * sqrt(slot's calibration variance) (equal weighted slope for the codec's per-slot relative-error
 *    objective), components all-zero on calibration left uncoded; lambda bisected so o0_static + rANS flushes match
 *    each budget. Reconstruction error (relative to each slot's variance, as the allocation weighs it, and absolute)
 *    against the fixed-rate level's on the same KV, and where that error falls on the fixed-rate levels' curve (nearest
 *    level; bytes a fixed-rate level, or one entropy-coded with o0_static rANS, would need for it, interpolated).
 * Also (part 'locality'): lag-1 correlation of the PCA coefficients between consecutive tokens, and the high-rate gain
 * ideal linear prediction from the previous token would give x8's coded components: how much token context could buy.
 * Fidelity (unless --fidelity off) is the fidelity benchmark's prefix-chained scoring (bench/fidelity.ts score():
 * top-1 agreement and mean KL against full recompute over teacher-forced answer positions, exact match): fixed-rate
 * levels through the real transform objects; ECSQ (and, as a check of that path, x8) as their reconstructed KV in fp16
 * objects with keys before RoPE, injected the same way.
 *
 *   npm run bench -- entropy-study [--model models/kdn-reader] [--sets document,composed] [--chunk 128] [--answer 32]
 *     [--fidelity on|off] [--fidelity-levels x4,...] [--ecsq-budgets x4,x6,x8,x12,x16 (any level)] [--docs n]
 * CPU backend only (the study reads and writes KV on the host); about 30 minutes on 2 cores with fidelity on. The
 * results file was made with
 *   npm run bench -- entropy-study --fidelity-levels x4,x4-6,x5-3,x6,x6-9,x8,x12,x16 \
 *     --ecsq-budgets x4,x5-3,x6,x6-9,x8,x12,x16
 */
import { readFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { KdnError } from '../common/errors.ts';
import { createEngine, kvBeforeRope, loadModelConfig, type Engine, type ModelConfig } from '../engine-adapter/index.ts';
import { CALIBRATION_TEXT, calibrationKV } from '../kdn/ingest/transform/fit-model-table.ts';
import {
  encodeKVObject,
  fitTransformTable,
  readCode,
  sectionWords,
  slotOf,
  TRANSFORM_LEVELS,
  transformSections,
  transformTables,
  type LevelSpec,
  type TransformTable,
} from '../storage/kv-object/index.ts';
import { TransformCodec } from '../storage/kv-object/codecs/transform.ts';
import type { KVTensors } from '../storage/kv-object/types.ts';
import { answerInjected, buildContexts, prefixChainedChunks, SETS, type Context, type ContextSet } from './fidelity.ts';
import { greedyAnswer, type GreedyAnswer } from './lib/answer.ts';
import { choice, choiceList, parseFlags, positiveInt } from './lib/args.ts';
import { loadDocuments, tokenizeDocuments } from './lib/fidelity-data.ts';
import { DEFAULT_MODEL_DIR } from '../kdn/default-model.ts';
import { round } from './lib/stats.ts';
import type { BenchRecord, BenchReport } from './report.ts';

/** The shipped levels and four between them (names are ~compression vs fp16). */
const LEVELS: LevelSpec[] = [
  ...TRANSFORM_LEVELS,
  { name: 'x4-6', targetBits: 3.5 },
  { name: 'x5-3', targetBits: 3 },
  { name: 'x6-9', targetBits: 16 / 6.857 },
  { name: 'x10', targetBits: 1.6 },
].sort((a, b) => b.targetBits - a.targetBits);
const LEVEL_NAMES = LEVELS.map((l) => l.name);
const BUDGETS = ['x4', 'x6', 'x8', 'x12', 'x16'];
/** Interleaved rANS: each layer block flushes 4 lanes of 32-bit state. */
const RANS_FLUSH_BYTES_PER_BLOCK = 16;
/** Add-alpha smoothing of static frequency tables, so symbols unseen on calibration stay codable. */
const ALPHA = 0.5;

interface StudyArgs {
  model: string;
  chunk: number;
  answer: number;
  docs: number;
  sets: ContextSet[];
  fidelity: boolean;
  fidelityLevels: string[];
  ecsqBudgets: string[];
}

function parse(args: string[]): StudyArgs {
  const v = parseFlags(args, {
    model: { type: 'string' },
    chunk: { type: 'string' },
    answer: { type: 'string' },
    docs: { type: 'string' },
    sets: { type: 'string' },
    fidelity: { type: 'string' },
    'fidelity-levels': { type: 'string' },
    'ecsq-budgets': { type: 'string' },
  });
  return {
    model: resolve(v.model ?? DEFAULT_MODEL_DIR),
    chunk: positiveInt(v.chunk, 128, 'chunk'),
    answer: positiveInt(v.answer, 32, 'answer'),
    docs: positiveInt(v.docs, Infinity, 'docs'),
    sets: choiceList(v.sets, SETS, SETS, 'sets'),
    fidelity: choice(v.fidelity, 'on', ['on', 'off'] as const, 'fidelity') === 'on',
    fidelityLevels: choiceList(v['fidelity-levels'], LEVEL_NAMES, LEVEL_NAMES, 'fidelity-levels'),
    ecsqBudgets: choiceList(v['ecsq-budgets'], BUDGETS, LEVEL_NAMES, 'ecsq-budgets'),
  };
}

/**
 * PCA coefficients of pre-RoPE KV, computed as the codec computes them (input rounded to f32 after subtracting the
 * mean, f32 basis rows, f64 sums in order of d), so fixed-rate codes derived from them are the codec's codes.
 * coeff[(t * S + slot) * D + j].
 */
interface Coefficients {
  tokens: number;
  coeff: Float64Array;
  /** Chunk boundaries: delta coding restarts at each. */
  chunkStarts: number[];
}

function coefficientsOf(table: TransformTable, kvs: readonly KVTensors[]): Coefficients {
  const { headDim: D, kvHeads: H, layers: L } = table;
  const S = L * 2 * H;
  const tokens = kvs.reduce((n, kv) => n + kv.tokens, 0);
  const coeff = new Float64Array(tokens * S * D);
  const chunkStarts: number[] = [];
  const x = new Float64Array(D);
  let t0 = 0;
  for (const kv of kvs) {
    chunkStarts.push(t0);
    for (let l = 0; l < L; l++) {
      for (const tensor of [0, 1] as const) {
        const src = tensor === 0 ? kv.perLayer[l]!.keys : kv.perLayer[l]!.values;
        for (let h = 0; h < H; h++) {
          const slot = slotOf(table, l, tensor, h);
          for (let t = 0; t < kv.tokens; t++) {
            const row = (t * H + h) * D;
            for (let d = 0; d < D; d++) x[d] = Math.fround(src[row + d]! - table.mean[slot * D + d]!);
            const out = ((t0 + t) * S + slot) * D;
            for (let j = 0; j < D; j++) {
              const b = (slot * D + j) * D;
              let c = 0;
              for (let d = 0; d < D; d++) c += table.basis[b + d]! * x[d]!;
              coeff[out + j] = c;
            }
          }
        }
      }
    }
    t0 += kv.tokens;
  }
  return { tokens, coeff, chunkStarts };
}

/** A quantizer per component: code(c) and its reconstruction; `alphabet` codes 0..size-1 or undefined (unbounded). */
interface Quantizer {
  /** Components with a code, as indices slot * D + j. */
  coded: number[];
  code(i: number, c: number): number;
  value(i: number, u: number): number;
  /** The code of coefficient 0 (delta coding's predecessor of a chunk's first token). */
  zero(i: number): number;
  /** Code bit width of component i for fixed-rate levels (0 = unbounded). */
  width(i: number): number;
}

function fixedQuantizer(table: TransformTable, level: number): Quantizer {
  const lv = table.levels[level]!;
  const coded: number[] = [];
  for (let i = 0; i < lv.bits.length; i++) if (lv.bits[i]! > 0) coded.push(i);
  const code = (i: number, c: number): number => {
    const top = (1 << lv.bits[i]!) - 1;
    const u = Math.round((c - lv.offset[i]!) * (1 / lv.step[i]!));
    return Math.min(Math.max(u, 0), top);
  };
  return {
    coded,
    code,
    value: (i, u) => (lv.bits[i]! === 0 ? lv.offset[i]! : u * lv.step[i]! + lv.offset[i]!),
    zero: (i) => code(i, 0),
    width: (i) => lv.bits[i]!,
  };
}

/** ECSQ: code = round(c / step[i]), no clamping; components with a 0 step are uncoded (reconstruct 0). */
function ecsqQuantizer(steps: Float64Array): Quantizer {
  const coded: number[] = [];
  for (let i = 0; i < steps.length; i++) if (steps[i]! > 0) coded.push(i);
  return {
    coded,
    code: (i, c) => Math.round(c / steps[i]!),
    value: (i, u) => (steps[i]! > 0 ? u * steps[i]! : 0),
    zero: () => 0,
    width: () => 0,
  };
}

/** Sparse symbol counts (codes may be any integer for ECSQ). */
type Histogram = Map<number, number>;

function add(h: Histogram, u: number): void {
  h.set(u, (h.get(u) ?? 0) + 1);
}

/** Codes and token deltas of every coded component, one Int32Array per component: codes[k][t]. */
interface CodeStreams {
  codes: Int32Array[];
  deltas: Int32Array[];
}

function streamsOf(q: Quantizer, c: Coefficients, S: number, D: number): CodeStreams {
  const codes: Int32Array[] = [];
  const deltas: Int32Array[] = [];
  const starts = new Set(c.chunkStarts);
  for (const i of q.coded) {
    const u = new Int32Array(c.tokens);
    const d = new Int32Array(c.tokens);
    const slot = Math.floor(i / D);
    const j = i % D;
    let prev = 0;
    for (let t = 0; t < c.tokens; t++) {
      u[t] = q.code(i, c.coeff[(t * S + slot) * D + j]!);
      d[t] = u[t]! - (starts.has(t) ? q.zero(i) : prev);
      prev = u[t]!;
    }
    codes.push(u);
    deltas.push(d);
  }
  return { codes, deltas };
}

function histogramOf(symbols: Int32Array, from = 0, to = symbols.length): Histogram {
  const h: Histogram = new Map();
  for (let t = from; t < to; t++) add(h, symbols[t]!);
  return h;
}

function entropyBits(h: Histogram): number {
  let n = 0;
  for (const c of h.values()) n += c;
  let bits = 0;
  for (const c of h.values()) bits -= c * Math.log2(c / n);
  return bits;
}

function gammaBits(x: number): number {
  return 2 * Math.floor(Math.log2(x)) + 1;
}

/**
 * A static frequency model fitted on calibration symbols: symbols in the calibration range [lo, hi] get
 * (count + ALPHA) / (n + ALPHA * (size + 1)); anything outside costs the escape symbol's share, a sign bit and
 * Elias-gamma of its distance past the range (never happens for bounded fixed-rate alphabets if the range is theirs).
 */
class StaticModel {
  private readonly counts: Histogram;
  private readonly lo: number;
  private readonly hi: number;
  private readonly total: number;

  constructor(calibration: Histogram, range?: { lo: number; hi: number }) {
    this.counts = calibration;
    const keys = [...calibration.keys()];
    this.lo = range?.lo ?? Math.min(...keys);
    this.hi = range?.hi ?? Math.max(...keys);
    let n = 0;
    for (const c of calibration.values()) n += c;
    // A bounded alphabet has no escape symbol.
    this.total = n + ALPHA * (this.hi - this.lo + 1 + (range ? 0 : 1));
  }

  /** Ideal code length of `h`'s symbols under the model, in bits. */
  crossEntropy(h: Histogram): number {
    let bits = 0;
    for (const [u, c] of h) {
      if (u >= this.lo && u <= this.hi) bits -= c * Math.log2(((this.counts.get(u) ?? 0) + ALPHA) / this.total);
      else bits += c * (-Math.log2(ALPHA / this.total) + 1 + gammaBits(u < this.lo ? this.lo - u : u - this.hi));
    }
    return bits;
  }
}

/** Per-object table + entropy of one chunk's symbols of one component. */
function adaptiveBits(symbols: Int32Array, from: number, to: number, symbolBits: number): number {
  const h = histogramOf(symbols, from, to);
  const keys = [...h.keys()];
  const lo = Math.min(...keys);
  const hi = Math.max(...keys);
  let table = 2 * symbolBits;
  for (let u = lo; u <= hi; u++) table += gammaBits((h.get(u) ?? 0) + 1);
  return entropyBits(h) + table;
}

/** Bits of every rate variant for one quantizer's codes of a set (and the calibration codes fitting the models). */
interface Rates {
  o0_static: number;
  o0_static_width: number;
  o0_insample: number;
  o0_adaptive: number;
  delta_static: number;
  delta_static_width: number;
  delta_insample: number;
  delta_adaptive: number;
}

function ratesOf(q: Quantizer, evalStreams: CodeStreams, calStreams: CodeStreams, chunkStarts: number[], tokens: number): Rates {
  const r: Rates = {
    o0_static: 0,
    o0_static_width: 0,
    o0_insample: 0,
    o0_adaptive: 0,
    delta_static: 0,
    delta_static_width: 0,
    delta_insample: 0,
    delta_adaptive: 0,
  };
  const bounds = [...chunkStarts, tokens];
  // Calibration histograms pooled per bit width (fixed-rate levels only; ECSQ pools every component).
  const pooled = new Map<number, { o0: Histogram; delta: Histogram }>();
  q.coded.forEach((i, k) => {
    const w = q.width(i);
    const p = pooled.get(w) ?? { o0: new Map(), delta: new Map() };
    pooled.set(w, p);
    for (const [u, c] of histogramOf(calStreams.codes[k]!)) p.o0.set(u, (p.o0.get(u) ?? 0) + c);
    for (const [u, c] of histogramOf(calStreams.deltas[k]!)) p.delta.set(u, (p.delta.get(u) ?? 0) + c);
  });
  q.coded.forEach((i, k) => {
    const w = q.width(i);
    const o0Range = w > 0 ? { lo: 0, hi: (1 << w) - 1 } : undefined;
    const deltaRange = w > 0 ? { lo: -((1 << w) - 1), hi: (1 << w) - 1 } : undefined;
    const codes = histogramOf(evalStreams.codes[k]!);
    const deltas = histogramOf(evalStreams.deltas[k]!);
    r.o0_static += new StaticModel(histogramOf(calStreams.codes[k]!), o0Range).crossEntropy(codes);
    r.delta_static += new StaticModel(histogramOf(calStreams.deltas[k]!), deltaRange).crossEntropy(deltas);
    r.o0_static_width += new StaticModel(pooled.get(w)!.o0, o0Range).crossEntropy(codes);
    r.delta_static_width += new StaticModel(pooled.get(w)!.delta, deltaRange).crossEntropy(deltas);
    r.o0_insample += entropyBits(codes);
    r.delta_insample += entropyBits(deltas);
    // Adaptive range fields: the bit width (or 16 bits for ECSQ), deltas one more.
    const symbolBits = w > 0 ? w : 16;
    for (let b = 0; b + 1 < bounds.length; b++) {
      r.o0_adaptive += adaptiveBits(evalStreams.codes[k]!, bounds[b]!, bounds[b + 1]!, symbolBits);
      r.delta_adaptive += adaptiveBits(evalStreams.deltas[k]!, bounds[b]!, bounds[b + 1]!, symbolBits + 1);
    }
  });
  return r;
}

/** o0_static of ratesOf alone (what the ECSQ step search needs), without building streams. */
function staticO0Bits(q: Quantizer, c: Coefficients, cal: Coefficients, S: number, D: number): number {
  let bits = 0;
  for (const i of q.coded) {
    const codesOf = (x: Coefficients): Histogram => {
      const h: Histogram = new Map();
      for (let t = 0; t < x.tokens; t++) add(h, q.code(i, x.coeff[t * S * D + i]!));
      return h;
    };
    bits += new StaticModel(codesOf(cal)).crossEntropy(codesOf(c));
  }
  return bits;
}

/** Squared reconstruction error of a quantizer on the coefficients (the basis is orthonormal: equal in KV space). */
function distortion(q: Quantizer, c: Coefficients, S: number, D: number, slotVariance: Float64Array) {
  const perSlot = new Float64Array(S);
  const coded = new Uint8Array(S * D);
  for (const i of q.coded) coded[i] = 1;
  for (let t = 0; t < c.tokens; t++) {
    for (let i = 0; i < S * D; i++) {
      const x = c.coeff[t * S * D + i]!;
      const y = coded[i] ? q.value(i, q.code(i, x)) : q.value(i, 0);
      perSlot[Math.floor(i / D)] += (x - y) ** 2;
    }
  }
  let absolute = 0;
  let relative = 0;
  for (let s = 0; s < S; s++) {
    absolute += perSlot[s]! / c.tokens;
    relative += perSlot[s]! / c.tokens / slotVariance[s]!;
  }
  // Mean squared error per KV element, and the allocation's objective: error / slot variance, averaged over slots.
  return { mse: absolute / (S * D), relativeMse: relative / S };
}

/** Reconstructed pre-RoPE KV of one chunk: mean + basis^T (dequantized coefficients). */
function reconstruct(table: TransformTable, q: Quantizer, c: Coefficients, from: number, kv: KVTensors): KVTensors {
  const { headDim: D, kvHeads: H, layers: L } = table;
  const S = L * 2 * H;
  const coded = new Uint8Array(S * D);
  for (const i of q.coded) coded[i] = 1;
  const perLayer = Array.from({ length: L }, () => ({
    keys: new Float32Array(kv.tokens * H * D),
    values: new Float32Array(kv.tokens * H * D),
  }));
  const y = new Float64Array(D);
  for (let t = 0; t < kv.tokens; t++) {
    for (let slot = 0; slot < S; slot++) {
      const base = ((from + t) * S + slot) * D;
      for (let j = 0; j < D; j++) {
        const i = slot * D + j;
        y[j] = coded[i] ? q.value(i, q.code(i, c.coeff[base + j]!)) : q.value(i, 0);
      }
      const layer = Math.floor(slot / (2 * H));
      const tensor = Math.floor(slot / H) % 2;
      const h = slot % H;
      const out = tensor === 0 ? perLayer[layer]!.keys : perLayer[layer]!.values;
      for (let d = 0; d < D; d++) {
        let x = table.mean[slot * D + d]!;
        for (let j = 0; j < D; j++) x += table.basis[(slot * D + j) * D + d]! * y[j]!;
        out[(t * H + h) * D + d] = x;
      }
    }
  }
  return { ...kv, ropeApplied: false, perLayer };
}

/** Fixed-rate payload bytes of `tokens` chunked as `chunkStarts` at a level (u32-padded sections). */
function fixedBytes(table: TransformTable, level: number, chunkStarts: number[], tokens: number): number {
  const bounds = [...chunkStarts, tokens];
  let bytes = 0;
  for (let b = 0; b + 1 < bounds.length; b++) {
    for (let l = 0; l < table.layers; l++) bytes += transformSections(table, level, l, bounds[b + 1]! - bounds[b]!).total;
  }
  return bytes;
}

/** Checks the derived codes against the real codec's packed codes on one chunk; throws on any difference. */
function checkAgainstCodec(table: TransformTable, level: number, kv: KVTensors, c: Coefficients): void {
  const q = fixedQuantizer(table, level);
  const codec = new TransformCodec(table, level);
  const { headDim: D, kvHeads: H } = table;
  const S = table.layers * 2 * H;
  const lv = table.levels[level]!;
  for (let l = 0; l < table.layers; l++) {
    const shape = { tokens: kv.tokens, kvHeads: H, headDim: D };
    const bytes = codec.encode(kv.perLayer[l]!, shape, l);
    for (const section of transformSections(table, level, l, kv.tokens).sections) {
      const slot = slotOf(table, l, section.tensor, section.head);
      const words = sectionWords(bytes, section);
      for (let t = 0; t < kv.tokens; t++) {
        let pos = t * section.rowBits;
        for (let j = 0; j < D; j++) {
          const bits = lv.bits[slot * D + j]!;
          if (bits === 0) continue;
          const ours = q.code(slot * D + j, c.coeff[(t * S + slot) * D + j]!);
          const theirs = readCode(words, pos, bits);
          if (ours !== theirs) throw new KdnError('INTERNAL', `code mismatch at layer ${l} slot ${slot} token ${t} component ${j}`);
          pos += bits;
        }
      }
    }
  }
}

/**
 * Where a relative MSE falls on the fixed-rate levels' curve: the nearest level, and the bytes per token (fixed-rate
 * and with order-0 static rANS) that would reach it, interpolating log(relative MSE) linearly in bytes between levels.
 */
function equivalentLevel(rates: BenchRecord[], relativeMse: number): BenchRecord {
  const levels = rates.map((r) => ({
    name: r.level as string,
    fixed: r.fixed_bytes_per_token as number,
    rans: r.o0_static_rans as number,
    e: Math.log(r.relative_mse as number),
  }));
  const e = Math.log(relativeMse);
  const nearest = levels.reduce((best, l) => (Math.abs(l.e - e) < Math.abs(best.e - e) ? l : best));
  const out: BenchRecord = { equivalent_nearest_level: nearest.name };
  for (let k = 0; k + 1 < levels.length; k++) {
    const [hi, lo] = [levels[k]!, levels[k + 1]!];
    if (e < hi.e || e > lo.e) continue;
    const f = (e - hi.e) / (lo.e - hi.e);
    out.equivalent_fixed_bytes_per_token = round(hi.fixed + f * (lo.fixed - hi.fixed), 5);
    out.equivalent_o0_static_rans_bytes_per_token = round(hi.rans + f * (lo.rans - hi.rans), 5);
  }
  return out;
}

/**
 * Token locality of the PCA coefficients: per component, the lag-1 correlation within chunks (around the set's own
 * mean). Summarized as the mean over components weighted by their share of their slot's variance, and, for the
 * components a level codes, the high-rate gain of ideal linear prediction from the previous token, sum of
 * -log2(1 - rho^2) / 2 bits, in bytes per token.
 */
function locality(c: Coefficients, S: number, D: number, coded: number[]): BenchRecord {
  const n = S * D;
  const mean = new Float64Array(n);
  for (let t = 0; t < c.tokens; t++) for (let i = 0; i < n; i++) mean[i] += c.coeff[t * n + i]! / c.tokens;
  const starts = new Set(c.chunkStarts);
  const xy = new Float64Array(n);
  const xx = new Float64Array(n);
  const yy = new Float64Array(n);
  const variance = new Float64Array(n);
  for (let t = 0; t < c.tokens; t++) {
    for (let i = 0; i < n; i++) {
      const y = c.coeff[t * n + i]! - mean[i]!;
      variance[i] += (y * y) / c.tokens;
      if (starts.has(t)) continue;
      const x = c.coeff[(t - 1) * n + i]! - mean[i]!;
      xy[i] += x * y;
      xx[i] += x * x;
      yy[i] += y * y;
    }
  }
  const rho = Array.from({ length: n }, (_, i) => (xx[i]! > 0 && yy[i]! > 0 ? xy[i]! / Math.sqrt(xx[i]! * yy[i]!) : 0));
  let weighted = 0;
  let over = 0;
  for (let s = 0; s < S; s++) {
    let total = 0;
    for (let j = 0; j < D; j++) total += variance[s * D + j]!;
    for (let j = 0; j < D; j++) {
      const w = total > 0 ? variance[s * D + j]! / total / S : 0;
      weighted += w * rho[s * D + j]!;
      if (rho[s * D + j]! > 0.5) over += w;
    }
  }
  const gain = coded.reduce((bits, i) => bits - 0.5 * Math.log2(1 - Math.min(rho[i]! ** 2, 0.999999)), 0);
  return {
    lag1_rho_variance_weighted: round(weighted, 4),
    variance_share_rho_over_0_5: round(over, 4),
    coded_prediction_gain_bytes_per_token: round(gain / 8, 4),
  };
}

/** Per slot, the total variance of its calibration coefficients (the allocation's weight is its inverse). */
function slotVariances(c: Coefficients, S: number, D: number): Float64Array {
  const v = new Float64Array(S);
  for (let t = 0; t < c.tokens; t++) for (let i = 0; i < S * D; i++) v[Math.floor(i / D)] += c.coeff[t * S * D + i]! ** 2 / c.tokens;
  return v;
}

/** ECSQ steps for `lambda`: step = lambda * sqrt(slot variance); components whose calibration codes are all 0 get 0. */
function ecsqSteps(lambda: number, cal: Coefficients, slotVariance: Float64Array, S: number, D: number): Float64Array {
  const steps = new Float64Array(S * D);
  for (let i = 0; i < S * D; i++) {
    const step = lambda * Math.sqrt(slotVariance[Math.floor(i / D)]!);
    let any = false;
    for (let t = 0; t < cal.tokens && !any; t++) any = Math.round(cal.coeff[t * S * D + i]! / step) !== 0;
    steps[i] = any ? step : 0;
  }
  return steps;
}

interface Chunked {
  set: ContextSet;
  contexts: Context[];
  /** Per context: its chunks (ids, exported KV with RoPE) and the reference answers per prompt. */
  chunks: { ids: number[]; kv: KVTensors }[][];
  answers: GreedyAnswer[][];
}

/** A set's chunks with the PCA coefficients of all its chunks' pre-RoPE KV, in context and chunk order. */
interface Measured extends Chunked {
  coefficients: Coefficients;
}

export async function run(args: string[]): Promise<BenchReport> {
  const a = parse(args);
  const engine = await createEngine({ modelDir: a.model, backend: 'cpu' });
  try {
    const study = await prepareStudy(engine, a);
    const records = studyRates(study);
    const ecsq = studyEcsq(study, records);
    if (a.fidelity) records.push(...(await studyFidelity(study, ecsq)));
    const { table, shipped, measured, calibration } = study;
    return {
      params: {
        model: a.model,
        fingerprint: study.fingerprint,
        backend: engine.backend,
        chunkTokens: a.chunk,
        answerTokens: a.answer,
        table: table.hash,
        shippedTable: shipped.hash,
        // prepareStudy refuses a table whose shipped levels differ from the shipped table's.
        standardLevelsMatchShipped: true,
        levels: LEVELS.map((l) => `${l.name}=${round(l.targetBits, 4)}b`).join(', '),
        fp16BytesPerToken: 2 * study.S * study.D,
        tokens: measured.map((m) => `${m.set}: ${m.coefficients.tokens} in ${m.coefficients.chunkStarts.length} chunks`).join('; '),
        calibrationTokens: calibration.tokens,
        ransFlushBytesPerLayerBlock: RANS_FLUSH_BYTES_PER_BLOCK,
        smoothingAlpha: ALPHA,
        method:
          'rates: bytes per token of the codes of the measured prefix-chained KV (payload only, no object header); ' +
          'o0/delta static: cross-entropy under per-component tables fitted on the calibration codes; insample: empirical ' +
          'entropy; adaptive: per-chunk entropy + per-chunk table; *_rans: + 16 B per layer block. ecsq: per-slot step ' +
          'lambda*sqrt(slot variance), lambda bisected on the first set so o0_static_rans <= the level budget; mse per KV ' +
          'element and relative_mse (per-slot error / slot variance, mean over slots) vs the fixed-rate level. fidelity: ' +
          'bench/fidelity.ts prefix-chained scoring',
      },
      records,
    };
  } finally {
    await engine.dispose();
  }
}

/** What every part of the study reads: the table, the calibration and measured sets' coefficients, their budgets. */
interface Study {
  a: StudyArgs;
  engine: Engine;
  bos: number;
  config: ModelConfig;
  fingerprint: string;
  calibration: KVTensors;
  table: TransformTable;
  shipped: TransformTable;
  /** Components per token slot (layers x K/V x heads) and per slot (head dim). */
  S: number;
  D: number;
  cal: Coefficients;
  slotVariance: Float64Array;
  measured: Measured[];
  /** Per level name, per set: the fixed-rate bytes per token. Filled by studyRates. */
  budgets: Map<string, Map<ContextSet, number>>;
}

/** rANS flush bytes per token of `m`'s chunks. */
function flushPerToken(study: Study, m: Measured): number {
  return (m.coefficients.chunkStarts.length * study.table.layers * RANS_FLUSH_BYTES_PER_BLOCK) / m.coefficients.tokens;
}

/**
 * The study's table (the shipped levels plus the study's, checked to match the shipped table's), the calibration
 * coefficients and every set's chunks measured.
 */
async function prepareStudy(engine: Engine, a: StudyArgs): Promise<Study> {
  const fingerprint = engine.info.fingerprint;
  const bos = engine.tokenizer.bosTokenId;
  if (bos === undefined) throw new KdnError('MODEL_UNSUPPORTED', 'the study needs a model with a BOS token');
  const config = await loadModelConfig(engine.info.path);
  const calibration = await calibrationKV(engine, await readFile(CALIBRATION_TEXT, 'utf8'));
  const table = transformTables.register(fitTransformTable([calibration], fingerprint, LEVELS));
  const shipped = fitTransformTable([calibration], fingerprint);
  const standardMatch = shipped.levels.every((s) => {
    const ours = table.levels.find((l) => l.name === s.name)!;
    return ours.bits.every((b, i) => b === s.bits[i] && ours.step[i] === s.step[i]);
  });
  if (!standardMatch) throw new KdnError('INTERNAL', "the study table's shipped levels differ from the shipped table's");
  await engine.useTransformTable(table);
  const D = table.headDim;
  const S = table.layers * 2 * table.kvHeads;
  // Calibration KV in 128-token chunks, as objects are cut, for the delta models' restarts.
  const calChunks: KVTensors[] = [];
  for (let s = 0; s < calibration.tokens; s += a.chunk) calChunks.push(sliceKV(calibration, s, Math.min(calibration.tokens, s + a.chunk)));
  const cal = coefficientsOf(table, calChunks);
  const measured: Measured[] = (await measure(engine, bos, a)).map((m) => ({
    ...m,
    coefficients: coefficientsOf(
      table,
      m.chunks.flat().map((c) => kvBeforeRope(c.kv, config)),
    ),
  }));
  const slotVariance = slotVariances(cal, S, D);
  return { a, engine, bos, config, fingerprint, calibration, table, shipped, S, D, cal, slotVariance, measured, budgets: new Map() };
}

/** 1. Rates of every fixed-rate level, per set; 2. per budget, the finest level whose entropy-coded bytes fit. */
function studyRates(study: Study): BenchRecord[] {
  const { table, config, cal, slotVariance, S, D, measured, budgets } = study;
  const records: BenchRecord[] = [];
  const fp16PerToken = 2 * S * D;
  for (const m of measured) {
    checkAgainstCodec(table, LEVEL_NAMES.indexOf('x8'), kvBeforeRope(m.chunks[0]![0]!.kv, config), m.coefficients);
    const rows: BenchRecord[] = [];
    table.levels.forEach((lv, level) => {
      const q = fixedQuantizer(table, level);
      const rates = ratesOf(
        q,
        streamsOf(q, m.coefficients, S, D),
        streamsOf(q, cal, S, D),
        m.coefficients.chunkStarts,
        m.coefficients.tokens,
      );
      const fixed = fixedBytes(table, level, m.coefficients.chunkStarts, m.coefficients.tokens) / m.coefficients.tokens;
      const perToken = (bits: number): number => bits / 8 / m.coefficients.tokens;
      const o0Rans = perToken(rates.o0_static) + flushPerToken(study, m);
      const deltaRans = perToken(rates.delta_static) + flushPerToken(study, m);
      const budgetsOfLevel = budgets.get(lv.name) ?? new Map<ContextSet, number>();
      budgetsOfLevel.set(m.set, fixed);
      budgets.set(lv.name, budgetsOfLevel);
      const d = distortion(q, m.coefficients, S, D, slotVariance);
      rows.push({
        part: 'rates',
        set: m.set,
        level: lv.name,
        targetBits: round(lv.targetBits, 4),
        fixed_bytes_per_token: round(fixed, 5),
        o0_static: round(perToken(rates.o0_static), 5),
        o0_static_width: round(perToken(rates.o0_static_width), 5),
        o0_insample: round(perToken(rates.o0_insample), 5),
        o0_adaptive: round(perToken(rates.o0_adaptive), 5),
        delta_static: round(perToken(rates.delta_static), 5),
        delta_static_width: round(perToken(rates.delta_static_width), 5),
        delta_insample: round(perToken(rates.delta_insample), 5),
        delta_adaptive: round(perToken(rates.delta_adaptive), 5),
        o0_static_rans: round(o0Rans, 5),
        delta_static_rans: round(deltaRans, 5),
        o0_saving: round(1 - o0Rans / fixed, 4),
        vs_fp16_fixed: round(fp16PerToken / fixed, 4),
        vs_fp16_o0_rans: round(fp16PerToken / o0Rans, 4),
        mse: round(d.mse, 4),
        relative_mse: round(d.relativeMse, 4),
      });
    });
    // 2. Per budget, the finest level whose entropy-coded bytes fit.
    for (const budget of BUDGETS) {
      const limit = rows.find((r) => r.level === budget)!.fixed_bytes_per_token as number;
      const fits = (key: string): string => rows.find((r) => (r[key] as number) <= limit)?.level as string;
      rows.push({
        part: 'fits',
        set: m.set,
        budget,
        budget_bytes_per_token: limit,
        o0_static_rans: fits('o0_static_rans'),
        delta_static_rans: fits('delta_static_rans'),
        o0_insample: fits('o0_insample'),
      });
    }
    records.push(...rows);
    records.push({
      part: 'locality',
      set: m.set,
      level: 'x8',
      ...locality(m.coefficients, S, D, fixedQuantizer(table, LEVEL_NAMES.indexOf('x8')).coded),
    });
    progress(`${m.set}: rates done`);
  }

  return records;
}

/** 3. ECSQ at each budget: lambda bisected on the first set measured (the document set), measured on every set. */
function studyEcsq(study: Study, records: BenchRecord[]): Map<string, Quantizer> {
  const { a, table, cal, slotVariance, S, D, measured, budgets } = study;
  const first = measured[0]!;
  const ecsq = new Map<string, Quantizer>();
  for (const budget of a.ecsqBudgets) {
    const target = budgets.get(budget)!.get(first.set)!;
    const rateAt = (lambda: number): { q: Quantizer; bytes: number } => {
      const q = ecsqQuantizer(ecsqSteps(lambda, cal, slotVariance, S, D));
      return { q, bytes: staticO0Bits(q, first.coefficients, cal, S, D) / 8 / first.coefficients.tokens + flushPerToken(study, first) };
    };
    let lo = 1e-3;
    let hi = 4;
    for (let it = 0; it < 18; it++) {
      const mid = Math.sqrt(lo * hi);
      if (rateAt(mid).bytes > target) lo = mid;
      else hi = mid;
    }
    const lambda = hi;
    const { q } = rateAt(lambda);
    ecsq.set(budget, q);
    for (const m of measured) {
      const rates = ratesOf(
        q,
        streamsOf(q, m.coefficients, S, D),
        streamsOf(q, cal, S, D),
        m.coefficients.chunkStarts,
        m.coefficients.tokens,
      );
      const perToken = (bits: number): number => bits / 8 / m.coefficients.tokens;
      const d = distortion(q, m.coefficients, S, D, slotVariance);
      const fixedLevel = fixedQuantizer(table, LEVEL_NAMES.indexOf(budget));
      const f = distortion(fixedLevel, m.coefficients, S, D, slotVariance);
      records.push({
        part: 'ecsq',
        set: m.set,
        budget,
        lambda: round(lambda, 5),
        coded_components: q.coded.length,
        budget_bytes_per_token: round(budgets.get(budget)!.get(m.set)!, 5),
        o0_static_rans: round(perToken(rates.o0_static) + flushPerToken(study, m), 5),
        o0_insample: round(perToken(rates.o0_insample), 5),
        delta_static_rans: round(perToken(rates.delta_static) + flushPerToken(study, m), 5),
        mse: round(d.mse, 4),
        relative_mse: round(d.relativeMse, 4),
        fixed_mse: round(f.mse, 4),
        fixed_relative_mse: round(f.relativeMse, 4),
        mse_ratio_vs_fixed: round(d.mse / f.mse, 4),
        relative_mse_ratio_vs_fixed: round(d.relativeMse / f.relativeMse, 4),
        ...equivalentLevel(
          records.filter((r) => r.part === 'rates' && r.set === m.set),
          d.relativeMse,
        ),
      });
    }
    progress(`ecsq ${budget}: lambda ${lambda}`);
  }

  return ecsq;
}

/** Fidelity: fixed-rate levels through real transform objects, ECSQ (and x8, as a check) via fp16 reconstructions. */
async function studyFidelity(study: Study, ecsq: Map<string, Quantizer>): Promise<BenchRecord[]> {
  const { a, engine, bos, table, config, fingerprint, measured } = study;
  const records: BenchRecord[] = [];
  const reconstructed = (name: string, q: Quantizer): Variant => ({
    name,
    encode: (c, m, from) =>
      encodeKVObject(reconstruct(table, q, m.coefficients, from, kvBeforeRope(c.kv, config)), {
        modelFingerprint: fingerprint,
        tokenIds: c.ids,
        codec: { name: 'fp16', lz4: false },
      }),
  });
  const variants: Variant[] = [
    {
      name: 'fp16',
      encode: (c) => encodeKVObject(c.kv, { modelFingerprint: fingerprint, tokenIds: c.ids, codec: { name: 'fp16', lz4: false } }),
    },
    ...a.fidelityLevels.map(
      (name): Variant => ({
        name: `transform:${name}`,
        encode: (c) =>
          encodeKVObject(kvBeforeRope(c.kv, config), {
            modelFingerprint: fingerprint,
            tokenIds: c.ids,
            codec: { name: 'transform', lz4: false, table: table.hash, level: LEVEL_NAMES.indexOf(name) },
          }),
      }),
    ),
    ...(a.fidelityLevels.includes('x8') ? [reconstructed('x8-reconstructed', fixedQuantizer(table, LEVEL_NAMES.indexOf('x8')))] : []),
    ...[...ecsq].map(([budget, q]) => reconstructed(`ecsq@${budget}`, q)),
  ];
  for (const m of measured) {
    for (const variant of variants) {
      const t = { positions: 0, agree: 0, klSum: 0, prompts: 0, exact: 0 };
      for (const [ci, context] of m.contexts.entries()) await scoreContext(engine, bos, context, m, ci, variant, t);
      records.push({
        part: 'fidelity',
        set: m.set,
        codec: variant.name,
        top1_agreement: round(t.agree / t.positions),
        mean_kl: round(t.klSum / t.positions, 3),
        exact_match: round(t.exact / t.prompts),
        positions: t.positions,
        prompts: t.prompts,
      });
      progress(`fidelity ${m.set} ${variant.name}: ${t.agree / t.positions} ${t.klSum / t.positions}`);
    }
  }
  return records;
}

/** A way to store a chunk: `from` is the chunk's first token in its set's coefficients. */
interface Variant {
  name: string;
  encode(chunk: { ids: number[]; kv: KVTensors }, m: Measured, from: number): Uint8Array;
}

async function scoreContext(
  engine: Engine,
  bos: number,
  context: Context,
  m: Measured,
  ci: number,
  variant: Variant,
  t: { positions: number; agree: number; klSum: number; prompts: number; exact: number },
): Promise<void> {
  let from = m.chunks.slice(0, ci).reduce((n, cs) => n + cs.reduce((k, c) => k + c.ids.length, 0), 0);
  const objects = m.chunks[ci]!.map((c) => {
    const bytes = variant.encode(c, m, from);
    from += c.ids.length;
    return bytes;
  });
  await answerInjected(engine, bos, objects, context, m.answers[ci]!, t);
}

/** A progress line on stderr, left out under the tests (KDN_TEST), as the fidelity benchmark does. */
function progress(line: string): void {
  if (!process.env.KDN_TEST) process.stderr.write(`entropy-study: ${line}\n`);
}

/** Tokens [start, end) of a KV export. */
function sliceKV(kv: KVTensors, start: number, end: number): KVTensors {
  const row = kv.kvHeads * kv.headDim;
  return {
    ...kv,
    tokens: end - start,
    positionBase: kv.positionBase + start,
    perLayer: kv.perLayer.map((l) => ({ keys: l.keys.slice(start * row, end * row), values: l.values.slice(start * row, end * row) })),
  };
}

/** Prefix-chained chunk KV, reference answers and coefficients of every context of each set. */
async function measure(engine: Engine, bos: number, a: StudyArgs): Promise<Chunked[]> {
  const { tokenizer } = engine;
  const capacity = Math.min(engine.info.maxPositionEmbeddings, 8192);
  const loaded = await loadDocuments(
    join(import.meta.dirname, 'data', 'questions.json'),
    join(import.meta.dirname, 'data', 'heldout'),
    a.docs,
    Infinity,
  );
  const docs = tokenizeDocuments(tokenizer, loaded, { capacity, chunk: a.chunk, answer: a.answer, maxDocTokens: 1024 });
  const out: Chunked[] = [];
  for (const set of a.sets) {
    const contexts = buildContexts(docs, { chunk: a.chunk, sets: [set] });
    const chunks: Measured['chunks'] = [];
    const answers: GreedyAnswer[][] = [];
    for (const context of contexts) {
      progress(`${set}: ${context.label}`);
      const contextLength = 1 + context.chunks.flat().length;
      const reference = engine.createSession({ capacity });
      try {
        await reference.prefill([bos, ...context.chunks.flat()], { logits: 'none' });
        const own: GreedyAnswer[] = [];
        if (a.fidelity) {
          for (const p of context.prompts) {
            reference.truncate(contextLength);
            own.push(await greedyAnswer(reference, p, a.answer));
          }
          reference.truncate(contextLength);
        }
        answers.push(own);
        chunks.push(await prefixChainedChunks(reference, context));
      } finally {
        reference.dispose();
      }
    }
    out.push({ set, contexts, chunks, answers });
  }
  return out;
}
