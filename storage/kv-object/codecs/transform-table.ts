import { createHash } from 'node:crypto';
import { KdnError } from '../../../common/errors.ts';
import type { KVLayerTensors } from '../types.ts';

/**
 * The transform table of the `transform` codec: per model, per layer l, tensor s (0 = keys before RoPE, 1 = values)
 * and KV head h, a PCA basis that decorrelates the head's vectors, and per quality level the bits, step and offset
 * of each component's uniform quantizer. KV objects of the codec hold only the packed codes and name their table
 * by its hash (KVHeader.codec.table), so the table is stored once per model and must be at hand to size or decode
 * a block. This file is the single definition of the table's byte format and of the codec's block layout.
 *
 * Component j of head (l, s, h) (rows of `basis`, by decreasing calibration variance; D = headDim):
 *   coefficient  c_j = sum_d basis[j][d] * (x_d - mean_d)
 *   code         u_j = clamp(round((c_j - offset_j) * (1 / step_j)), 0, 2^bits_j - 1)   (bits_j = 0: no code;
 *                the encoder multiplies by 1 / step_j, which may differ from dividing by step_j in the last bit)
 *   dequantized  c'_j = u_j * step_j + offset_j                                    (bits_j = 0: c'_j = offset_j)
 *   reconstructed x'_d = mean_d + sum_j basis[j][d] * c'_j
 *
 * Layer block (no header of its own): sections in order keys h0, keys h1, ..., values h0, ...; section (s, h)
 * holds every token's codes token-major: rowBits = sum_j bits_j, token t's code j starts at bit
 * t * rowBits + sum_{i<j} bits_i, packed LSB-first into little-endian u32 words (a code may straddle two words).
 * Each section is ceil(tokens * rowBits / 32) whole words, so every section starts 4-byte aligned.
 *
 * Table bytes (all numbers little-endian; L layers, H kvHeads, D headDim, Q levels, S = L * 2 * H slots in
 * (l, s, h) order, slot = (l * 2 + s) * H + h):
 *   0       5        magic "KDNTT"
 *   5       1        version (1)
 *   6       2        u16 zero
 *   8       4 * 5    u32 L, H, D, Q, F (fingerprint byte length)
 *   28      F        model fingerprint, UTF-8, then zero bytes up to a multiple of 4
 *   ..      16 * Q   per level: name (ASCII [a-z0-9-], zero padded to 12 bytes), f32 target bits per element
 *   ..      4*S*D    mean   f32[S][D]
 *   ..      4*S*D*D  basis  f32[S][D][D]  (component-major: basis[slot][j][d])
 *   per level q:     bits u8[S][D] (then zero bytes to a multiple of 4), step f32[S][D], offset f32[S][D]
 *   end - 32  32     sha256 of every byte before it; its hex is the table's hash, the id KV headers carry
 */

export const TABLE_MAGIC = Buffer.from('KDNTT', 'ascii');
export const TABLE_VERSION = 1;
/** Widest code: a 16-bit code starting anywhere in a word spans at most two words. */
export const MAX_COMPONENT_BITS = 16;

/** Caps on what a table may claim; they bound what parsing allocates. */
export const TABLE_LIMITS = {
  layers: 1024,
  kvHeads: 1024,
  headDim: 512,
  levels: 16,
  fingerprintBytes: 256,
  levelNameBytes: 12,
  /** Whole serialized table: enough for an 80-layer, 8-KV-head, 128-dim model with 16 levels. */
  totalBytes: 512 * 1024 * 1024,
} as const;

const LEVEL_NAME = /^[a-z0-9-]{1,12}$/;
const FIXED_HEADER_BYTES = 28;
const HASH_BYTES = 32;

export interface TransformLevel {
  /** Short name, e.g. "x8": what CLIs and configs call the level. */
  name: string;
  /** Average bits per KV element the level's bit allocation aimed at (fp16 is 16). */
  targetBits: number;
  /** bits[slot * D + j], step[...], offset[...]: component j's quantizer in slot (l, s, h). */
  bits: Uint8Array;
  step: Float32Array;
  offset: Float32Array;
}

export interface TransformTableData {
  modelFingerprint: string;
  layers: number;
  kvHeads: number;
  headDim: number;
  /** mean[slot * D + d] */
  mean: Float32Array;
  /** basis[(slot * D + j) * D + d] */
  basis: Float32Array;
  levels: TransformLevel[];
}

/** A parsed, verified table. Only parseTransformTable makes one, so holding one means its bytes were checked. */
export interface TransformTable extends TransformTableData {
  /** sha256 hex of the serialized table (its trailing checksum): how KV headers name it. */
  readonly hash: string;
  readonly bytes: Uint8Array;
}

/** Index of (layer, tensor, head) in the table's per-slot arrays; tensor 0 = keys, 1 = values. */
export function slotOf(table: Pick<TransformTableData, 'kvHeads'>, layer: number, tensor: 0 | 1, head: number): number {
  return (layer * 2 + tensor) * table.kvHeads + head;
}

export interface TransformSection {
  tensor: 0 | 1;
  head: number;
  /** Byte offset of the section in the layer block (a multiple of 4). */
  offset: number;
  /** Bits of one token's codes in this section. */
  rowBits: number;
  bytes: number;
}

export interface TransformLayout {
  /** In block order: keys h0..h(H-1), then values h0..h(H-1). */
  sections: TransformSection[];
  total: number;
}

/** Section offsets and sizes of layer `layer`'s block at `level` for `tokens` tokens. */
export function transformSections(table: TransformTableData, level: number, layer: number, tokens: number): TransformLayout {
  const lv = table.levels[level];
  if (!lv)
    throw new KdnError('KV_UNSUPPORTED', `transform table has no level ${level}`, { hint: `levels are 0..${table.levels.length - 1}` });
  if (!Number.isInteger(layer) || layer < 0 || layer >= table.layers) {
    throw new KdnError('KV_UNSUPPORTED', `transform table has no layer ${layer}`);
  }
  const D = table.headDim;
  const sections: TransformSection[] = [];
  let offset = 0;
  for (const tensor of [0, 1] as const) {
    for (let head = 0; head < table.kvHeads; head++) {
      const base = slotOf(table, layer, tensor, head) * D;
      let rowBits = 0;
      for (let j = 0; j < D; j++) rowBits += lv.bits[base + j]!;
      const bytes = 4 * Math.ceil((tokens * rowBits) / 32);
      sections.push({ tensor, head, offset, rowBits, bytes });
      offset += bytes;
    }
  }
  return { sections, total: offset };
}

/** Reads the `bits`-wide code at bit position `pos` of the LSB-first u32 words `words`. */
export function readCode(words: Uint32Array, pos: number, bits: number): number {
  const w = pos >>> 5;
  const shift = pos & 31;
  let v = words[w]! >>> shift;
  if (shift + bits > 32) v |= words[w + 1]! << (32 - shift);
  return v & ((1 << bits) - 1);
}

/** ORs the `bits`-wide `code` in at bit position `pos`; the words must start zeroed. */
export function writeCode(words: Uint32Array, pos: number, bits: number, code: number): void {
  const w = pos >>> 5;
  const shift = pos & 31;
  words[w] = (words[w]! | (code << shift)) >>> 0;
  if (shift + bits > 32) words[w + 1] = (words[w + 1]! | (code >>> (32 - shift))) >>> 0;
}

/** A section's little-endian words, assembled byte by byte so the host's byte order does not matter. */
export function sectionWords(bytes: Uint8Array, section: Pick<TransformSection, 'offset' | 'bytes'>): Uint32Array {
  const words = new Uint32Array(section.bytes / 4);
  for (let w = 0, o = section.offset; w < words.length; w++, o += 4) {
    words[w] = (bytes[o]! | (bytes[o + 1]! << 8) | (bytes[o + 2]! << 16) | (bytes[o + 3]! << 24)) >>> 0;
  }
  return words;
}

/**
 * Reference decoder of one layer block: plain loops over the definition above, for tests of faster decoders.
 * Returns keys (before RoPE) and values as [tokens][kvHeads][headDim].
 */
export function decodeTransformBlock(
  table: TransformTable,
  level: number,
  layer: number,
  tokens: number,
  bytes: Uint8Array,
): KVLayerTensors {
  const layout = transformSections(table, level, layer, tokens);
  if (bytes.length !== layout.total) {
    throw new KdnError('KV_CORRUPT', `transform block is ${bytes.length} bytes, expected ${layout.total}`);
  }
  const { kvHeads: H, headDim: D } = table;
  const lv = table.levels[level]!;
  const out = [new Float32Array(tokens * H * D), new Float32Array(tokens * H * D)] as const;
  const coeff = new Float64Array(D);
  for (const section of layout.sections) {
    const slot = slotOf(table, layer, section.tensor, section.head);
    const words = sectionWords(bytes, section);
    const target = out[section.tensor];
    for (let t = 0; t < tokens; t++) {
      let pos = t * section.rowBits;
      for (let j = 0; j < D; j++) {
        const i = slot * D + j;
        const bits = lv.bits[i]!;
        coeff[j] = bits === 0 ? lv.offset[i]! : readCode(words, pos, bits) * lv.step[i]! + lv.offset[i]!;
        pos += bits;
      }
      const row = (t * H + section.head) * D;
      for (let d = 0; d < D; d++) {
        let x = table.mean[slot * D + d]!;
        for (let j = 0; j < D; j++) x += table.basis[(slot * D + j) * D + d]! * coeff[j]!;
        target[row + d] = x;
      }
    }
  }
  return { keys: out[0], values: out[1] };
}

function tableCorrupt(message: string): KdnError {
  return new KdnError('KV_CORRUPT', `bad transform table: ${message}`, { hint: 'refetch the table from the origin or refit it' });
}

function align4(n: number): number {
  return (n + 3) & ~3;
}

/** Byte size of each part of a serialized table with these dimensions. */
function tableSizes(layers: number, kvHeads: number, headDim: number, levels: number, fingerprintBytes: number) {
  const perSlot = layers * 2 * kvHeads * headDim;
  const headerBytes = FIXED_HEADER_BYTES + align4(fingerprintBytes) + 16 * levels;
  const levelBytes = align4(perSlot) + 8 * perSlot;
  const total = headerBytes + 4 * perSlot + 4 * perSlot * headDim + levels * levelBytes + HASH_BYTES;
  return { perSlot, headerBytes, levelBytes, total };
}

/** Serializes (and so hashes) table data; the result parses back to an equal table. */
export function serializeTransformTable(data: TransformTableData): TransformTable {
  const fingerprint = Buffer.from(data.modelFingerprint, 'utf8');
  const { layers, kvHeads, headDim } = data;
  const sizes = tableSizes(layers, kvHeads, headDim, data.levels.length, fingerprint.length);
  const out = Buffer.alloc(sizes.total);
  TABLE_MAGIC.copy(out, 0);
  out[5] = TABLE_VERSION;
  [layers, kvHeads, headDim, data.levels.length, fingerprint.length].forEach((v, i) => out.writeUInt32LE(v, 8 + 4 * i));
  fingerprint.copy(out, FIXED_HEADER_BYTES);
  let at = FIXED_HEADER_BYTES + align4(fingerprint.length);
  for (const level of data.levels) {
    out.write(level.name, at, 'ascii');
    out.writeFloatLE(level.targetBits, at + 12);
    at += 16;
  }
  const putF32 = (a: Float32Array): void => {
    Buffer.from(a.buffer, a.byteOffset, a.byteLength).copy(out, at);
    at += a.byteLength;
  };
  putF32(data.mean);
  putF32(data.basis);
  for (const level of data.levels) {
    out.set(level.bits, at);
    at += align4(level.bits.length);
    putF32(level.step);
    putF32(level.offset);
  }
  createHash('sha256').update(out.subarray(0, at)).digest().copy(out, at);
  return parseTransformTable(out);
}

/**
 * Parses and verifies serialized table bytes: the magic, version, dimensions against TABLE_LIMITS, the exact
 * length, the checksum, level names, bits in 0..MAX_COMPONENT_BITS, every float finite and every coded step > 0.
 * Anything wrong is KV_CORRUPT (an unknown version is KV_UNSUPPORTED). The arrays are copies, not views.
 */
export function parseTransformTable(bytes: Uint8Array): TransformTable {
  const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (buf.length < FIXED_HEADER_BYTES + HASH_BYTES) throw tableCorrupt(`${buf.length} bytes is shorter than any table`);
  if (!buf.subarray(0, 5).equals(TABLE_MAGIC)) throw tableCorrupt('bad magic');
  if (buf[5] !== TABLE_VERSION) {
    throw new KdnError('KV_UNSUPPORTED', `transform table version ${buf[5]}; this build reads ${TABLE_VERSION}`);
  }
  const dims = [0, 1, 2, 3, 4].map((i) => buf.readUInt32LE(8 + 4 * i));
  const [layers, kvHeads, headDim, levelCount, fpBytes] = dims as [number, number, number, number, number];
  const caps = [TABLE_LIMITS.layers, TABLE_LIMITS.kvHeads, TABLE_LIMITS.headDim, TABLE_LIMITS.levels, TABLE_LIMITS.fingerprintBytes];
  const names = ['layers', 'kvHeads', 'headDim', 'levels', 'fingerprint length'];
  dims.forEach((v, i) => {
    if (v < 1 || v > caps[i]!) throw tableCorrupt(`${names[i]} ${v} outside 1..${caps[i]}`);
  });
  const sizes = tableSizes(layers, kvHeads, headDim, levelCount, fpBytes);
  if (sizes.total > TABLE_LIMITS.totalBytes) throw tableCorrupt(`${sizes.total} bytes is over the ${TABLE_LIMITS.totalBytes} cap`);
  if (buf.length !== sizes.total) throw tableCorrupt(`${buf.length} bytes; its dimensions need ${sizes.total}`);
  const body = buf.subarray(0, sizes.total - HASH_BYTES);
  const digest = createHash('sha256').update(body).digest();
  if (!digest.equals(buf.subarray(sizes.total - HASH_BYTES))) throw tableCorrupt('checksum mismatch');
  if (buf.readUInt16LE(6) !== 0) throw tableCorrupt('reserved bytes are not zero');
  let modelFingerprint: string;
  try {
    modelFingerprint = new TextDecoder('utf-8', { fatal: true }).decode(buf.subarray(FIXED_HEADER_BYTES, FIXED_HEADER_BYTES + fpBytes));
  } catch {
    throw tableCorrupt('model fingerprint is not UTF-8');
  }
  const reader = new TableReader(buf, FIXED_HEADER_BYTES + align4(fpBytes));
  const levelHeads = Array.from({ length: levelCount }, () => reader.levelHead());
  const mean = reader.f32(sizes.perSlot, 'mean');
  const basis = reader.f32(sizes.perSlot * headDim, 'basis');
  const levels = levelHeads.map((head) => reader.level(head, sizes.perSlot));
  const hash = digest.toString('hex');
  return { hash, bytes: new Uint8Array(buf), modelFingerprint, layers, kvHeads, headDim, mean, basis, levels };
}

/** Sequential reader over a table whose length and checksum were already verified. */
class TableReader {
  constructor(
    private readonly buf: Buffer,
    private at: number,
  ) {}

  f32(count: number, what: string): Float32Array {
    const out = new Float32Array(count);
    new Uint8Array(out.buffer).set(this.buf.subarray(this.at, this.at + 4 * count));
    this.at += 4 * count;
    for (let i = 0; i < count; i++) if (!Number.isFinite(out[i]!)) throw tableCorrupt(`${what}[${i}] is not finite`);
    return out;
  }

  levelHead(): { name: string; targetBits: number } {
    const raw = this.buf.subarray(this.at, this.at + TABLE_LIMITS.levelNameBytes);
    const end = raw.indexOf(0);
    const name = raw.subarray(0, end < 0 ? raw.length : end).toString('latin1');
    if (!LEVEL_NAME.test(name) || (end >= 0 && raw.subarray(end).some((b) => b !== 0))) {
      throw tableCorrupt(`level name ${JSON.stringify(name)} is not 1..12 of [a-z0-9-] zero padded`);
    }
    const targetBits = this.buf.readFloatLE(this.at + 12);
    if (!(targetBits > 0 && targetBits <= MAX_COMPONENT_BITS)) throw tableCorrupt(`level ${name} targetBits ${targetBits}`);
    this.at += 16;
    return { name, targetBits };
  }

  level(head: { name: string; targetBits: number }, perSlot: number): TransformLevel {
    const bits = new Uint8Array(this.buf.subarray(this.at, this.at + perSlot));
    this.at += align4(perSlot);
    for (let i = 0; i < perSlot; i++) {
      if (bits[i]! > MAX_COMPONENT_BITS) throw tableCorrupt(`level ${head.name} bits[${i}] = ${bits[i]} is over ${MAX_COMPONENT_BITS}`);
    }
    const step = this.f32(perSlot, `level ${head.name} step`);
    const offset = this.f32(perSlot, `level ${head.name} offset`);
    for (let i = 0; i < perSlot; i++) {
      if (bits[i]! > 0 && !(step[i]! > 0)) throw tableCorrupt(`level ${head.name} step[${i}] = ${step[i]} must be > 0`);
    }
    return { ...head, bits, step, offset };
  }
}
