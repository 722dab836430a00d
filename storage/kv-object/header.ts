import { createHash } from 'node:crypto';
import { KdnError } from '../../common/errors.ts';
import type { CodecSpec, KVExpectation, KVHeader } from './types.ts';
import { codecEntry, type LayerCodec, type LayerShape } from './codecs/index.ts';
import { MAX_COMPONENT_BITS } from './codecs/transform-table.ts';
import { lz4MaxStoredSize, lz4MinStoredSize } from './lz4.ts';
import { readableVersion } from './layer-digest.ts';

/** Caps on what a header may claim; they bound what any reader allocates for one layer. */
export const LIMITS = {
  layers: 1024,
  kvHeads: 1024,
  headDim: 4096,
  tokens: 1 << 20,
  /** tokens * kvHeads * headDim: 2^26 elements is 512 MiB of float32 keys + values for one layer. */
  layerElements: 1 << 26,
  positionBase: 2 ** 31 - 1,
  fingerprintLength: 256,
} as const;

const HEADER_FIELDS = new Set([
  'version',
  'modelFingerprint',
  'layers',
  'kvHeads',
  'headDim',
  'tokens',
  'tokenHash',
  'positionBase',
  'ropeApplied',
  'codec',
  'layerOffsets',
  'layerChecksums',
  'payloadChecksum',
]);
const SHA256_HEX = /^[0-9a-f]{64}$/;

function corrupt(message: string): KdnError {
  return new KdnError('KV_CORRUPT', `bad KV header: ${message}`);
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && !ArrayBuffer.isView(v);
}

function intField(h: Record<string, unknown>, name: string, min: number, max: number): number {
  const v = h[name];
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
    throw corrupt(`${name} must be an integer in ${min}..${max}, got ${JSON.stringify(v)}`);
  }
  return v;
}

function hexField(v: unknown, name: string): string {
  if (typeof v !== 'string' || !SHA256_HEX.test(v)) throw corrupt(`${name} must be 64 lowercase hex digits`);
  return v;
}

function onlyFields(v: Record<string, unknown>, allowed: Set<string>, what: string): void {
  for (const key of Object.keys(v)) if (!allowed.has(key)) throw corrupt(`unknown ${what} field ${JSON.stringify(key)}`);
}

/** sha256 over the concatenated per-layer checksums (hex ASCII): the payload checksum. */
export function payloadChecksumOf(layerChecksums: readonly string[]): string {
  const hash = createHash('sha256');
  for (const c of layerChecksums) hash.update(c, 'ascii');
  return hash.digest('hex');
}

export function layerShape(header: Pick<KVHeader, 'tokens' | 'kvHeads' | 'headDim'>): LayerShape {
  return { tokens: header.tokens, kvHeads: header.kvHeads, headDim: header.headDim };
}

/** Stored size bounds of layer block `layer`: exact without lz4, lz4's worst cases around the codec size with it. */
export function storedBlockBounds(
  codec: LayerCodec,
  spec: CodecSpec,
  shape: LayerShape,
  layer: number,
): { min: number; max: number; decoded: number } {
  const decoded = codec.expectedSize(shape, layer);
  return spec.lz4 ? { min: lz4MinStoredSize(decoded), max: lz4MaxStoredSize(decoded), decoded } : { min: decoded, max: decoded, decoded };
}

/**
 * Stored size bounds of a block whose codec may not be bound here (a transform table not loaded): then anything
 * up to the widest transform block, MAX_COMPONENT_BITS per element for keys and values plus each section's
 * rounding up to whole words.
 */
export function blockSizeBounds(
  spec: CodecSpec,
  codec: LayerCodec | undefined,
  shape: LayerShape,
  layer: number,
): { min: number; max: number } {
  if (codec) return storedBlockBounds(codec, spec, shape, layer);
  const codes = 2 * Math.ceil((shape.tokens * shape.kvHeads * shape.headDim * MAX_COMPONENT_BITS) / 8);
  return { min: 0, max: codes + 4 * 2 * shape.kvHeads };
}

/**
 * The codec spec with exactly its codec's fields, each checked. Returns the bound codec when this process has what
 * it needs (a transform object's table), else undefined: the header is still valid (an edge ships such objects
 * without the table) but block sizes cannot be checked until the table is registered.
 */
function validateCodec(v: unknown): { spec: CodecSpec; codec: LayerCodec | undefined } {
  if (!isRecord(v)) throw corrupt('codec must be a map');
  if (typeof v.name !== 'string') throw corrupt('codec.name must be a string');
  const entry = codecEntry(v.name);
  const allowed = new Set<string>(['name', 'lz4', ...entry.fields]);
  onlyFields(v, allowed, 'codec');
  if (typeof v.lz4 !== 'boolean') throw corrupt('codec.lz4 must be a boolean');
  const spec = { name: v.name, lz4: v.lz4 } as CodecSpec;
  for (const field of entry.fields) {
    if (v[field] === undefined) continue;
    if (typeof v[field] !== (field === 'table' ? 'string' : 'number')) throw corrupt(`codec.${field} has the wrong type`);
    Object.assign(spec, { [field]: v[field] });
  }
  entry.check(spec);
  return { spec, codec: entry.available(spec) ? entry.bind(spec) : undefined };
}

/**
 * Checks every field of an unpacked header (types, ranges, caps) and that the offsets, checksums and sizes agree
 * with each other and with the codec. Unsupported version or codec: KV_UNSUPPORTED; anything else: KV_CORRUPT.
 */
export function validateHeader(raw: unknown): KVHeader {
  if (!isRecord(raw)) throw corrupt('not a map');
  onlyFields(raw, HEADER_FIELDS, 'header');
  const version = readableVersion(raw.version, 'header');
  const fp = raw.modelFingerprint;
  if (typeof fp !== 'string' || fp.length < 1 || fp.length > LIMITS.fingerprintLength) {
    throw corrupt(`modelFingerprint must be a string of 1..${LIMITS.fingerprintLength} characters`);
  }
  const layers = intField(raw, 'layers', 1, LIMITS.layers);
  const kvHeads = intField(raw, 'kvHeads', 1, LIMITS.kvHeads);
  const headDim = intField(raw, 'headDim', 1, LIMITS.headDim);
  const tokens = intField(raw, 'tokens', 1, LIMITS.tokens);
  if (tokens * kvHeads * headDim > LIMITS.layerElements) {
    throw corrupt(`tokens * kvHeads * headDim = ${tokens * kvHeads * headDim} is over the ${LIMITS.layerElements} cap`);
  }
  const tokenHash = hexField(raw.tokenHash, 'tokenHash');
  const positionBase = intField(raw, 'positionBase', 0, LIMITS.positionBase);
  if (typeof raw.ropeApplied !== 'boolean') throw corrupt('ropeApplied must be a boolean');
  const { spec: codec, codec: bound } = validateCodec(raw.codec);
  if (raw.ropeApplied && codecEntry(codec.name).keysBeforeRope)
    throw corrupt(`${codec.name} objects hold keys before RoPE, yet ropeApplied is true`);
  if (bound) codecEntry(codec.name).checkContext(codec, { modelFingerprint: fp, layers, kvHeads, headDim });
  checkLayerOffsets(raw.layerOffsets, layers, codec, bound, { tokens, kvHeads, headDim });

  const checksums = raw.layerChecksums;
  if (!Array.isArray(checksums) || checksums.length !== layers) throw corrupt(`layerChecksums must have ${layers} entries`);
  const layerChecksums = checksums.map((c: unknown, i) => hexField(c, `layerChecksums[${i}]`));
  const payloadChecksum = hexField(raw.payloadChecksum, 'payloadChecksum');
  if (payloadChecksumOf(layerChecksums) !== payloadChecksum) throw corrupt('payloadChecksum does not match layerChecksums');

  return {
    version,
    modelFingerprint: fp,
    layers,
    kvHeads,
    headDim,
    tokens,
    tokenHash,
    positionBase,
    ropeApplied: raw.ropeApplied,
    codec,
    layerOffsets: raw.layerOffsets as number[],
    layerChecksums,
    payloadChecksum,
  };
}

/** layerOffsets: layers + 1 integers from 0, each block within its codec's size bounds for the shape. */
function checkLayerOffsets(offsets: unknown, layers: number, spec: CodecSpec, codec: LayerCodec | undefined, shape: LayerShape): void {
  if (!Array.isArray(offsets) || offsets.length !== layers + 1) throw corrupt(`layerOffsets must have ${layers + 1} entries`);
  if (offsets[0] !== 0) throw corrupt('layerOffsets[0] must be 0');
  for (let i = 0; i < layers; i++) {
    const a = offsets[i] as number;
    const b = offsets[i + 1] as unknown;
    if (typeof b !== 'number' || !Number.isSafeInteger(b)) throw corrupt(`layerOffsets[${i + 1}] is not an integer`);
    const size = b - a;
    const { min, max } = blockSizeBounds(spec, codec, shape, i);
    if (size < min || size > max) {
      throw corrupt(
        `layer ${i} block is ${size} bytes; ${spec.name}${spec.lz4 ? '+lz4' : ''} for this shape needs ${min === max ? min : `${min}..${max}`}`,
      );
    }
  }
}

/** Compares a header with what the reader expects; any difference is KV_MISMATCH. */
export function checkExpectation(header: KVHeader, expect: KVExpectation | undefined): void {
  if (!expect) return;
  const fields = ['modelFingerprint', 'layers', 'kvHeads', 'headDim', 'tokens', 'tokenHash'] as const;
  for (const field of fields) {
    const want = expect[field];
    if (want !== undefined && header[field] !== want) {
      throw new KdnError('KV_MISMATCH', `KV object ${field} is ${JSON.stringify(header[field])}, expected ${JSON.stringify(want)}`, {
        hint:
          field === 'modelFingerprint'
            ? 'the object was computed for another model (or other weights); recompute it'
            : 'the object does not belong to this request; recompute or refetch it',
        details: { field, actual: header[field], expected: want },
      });
    }
  }
}
