import { createHash } from 'node:crypto';
import { Packr, Unpackr } from 'msgpackr';
import { KdnError } from '../../common/errors.ts';
import type { KVHeader } from './types.ts';
import { validateHeader } from './header.ts';
import { readableVersion, type LayerDigestVersion } from './layer-digest.ts';

/**
 * Byte layout of a KV object (versions 1 and 2, which differ only in the layer checksums' hash). All integers
 * little-endian.
 *
 *   offset        size  field
 *   0             5     magic "KDNKV" (ASCII)
 *   5             1     format version byte (= KVHeader.version: 1 or 2)
 *   6             4     u32 H: header length, 1 <= H <= MAX_HEADER_BYTES
 *   10            H     header: msgpack (msgpackr, plain maps, no records) of the KVHeader fields in types.ts
 *   10 + H        32    sha256 of the H header bytes, so a flipped header bit is caught before parsing
 *   42 + H        P     payload: `layers` layer blocks in layer order, P = layerOffsets[layers]
 *   42 + H + P          end of object; trailing bytes are corruption
 *
 * Layer block i is payload[layerOffsets[i] .. layerOffsets[i + 1]): the layer's keys then values as the codec
 * lays them out (codecs/fp16.ts, codecs/int8.ts, codecs/int4.ts, codecs/transform-table.ts), then, when codec.lz4,
 * framed by lz4.ts (u32 LE decoded length + one lz4 block), so every layer decodes on its own as it arrives.
 * layerChecksums[i] is the hex digest of the stored (post-lz4) block i: sha256 in version 1, BLAKE3-256 in version 2
 * (layer-digest.ts). payloadChecksum is the sha256 hex of the concatenated layerChecksums hex strings (ASCII), so the
 * header pins down the whole payload.
 *
 * A reader checks, before allocating anything sized by the object: the magic and version, H against the bound,
 * the header hash, every header field (types, ranges, caps in header.ts), that each block's stored size is the
 * codec's exact size for the shape (or within lz4's bounds of it), and that the object's length matches. A transform
 * object's exact sizes need its table (codecs/transform-tables.ts); without it they are bounded by the widest
 * transform block, and the layer checksums still pin the payload down.
 */

export const MAGIC = Buffer.from('KDNKV', 'ascii');
export const PREAMBLE_BYTES = MAGIC.length + 1 + 4;
export const HEADER_HASH_BYTES = 32;
export const MAX_HEADER_BYTES = 1 << 20;

const packr = new Packr({ useRecords: false, moreTypes: false });
const unpackr = new Unpackr({ useRecords: false, mapsAsObjects: true });

/** The bytes before the payload: preamble, header, header hash. */
export function serializeHeader(header: KVHeader): Buffer {
  const body = packr.pack(header);
  if (body.length > MAX_HEADER_BYTES) {
    throw new KdnError('INVALID_ARGUMENT', `KV header is ${body.length} bytes, over the ${MAX_HEADER_BYTES} limit`);
  }
  const out = Buffer.alloc(PREAMBLE_BYTES + body.length + HEADER_HASH_BYTES);
  MAGIC.copy(out, 0);
  out[MAGIC.length] = header.version;
  out.writeUInt32LE(body.length, MAGIC.length + 1);
  body.copy(out, PREAMBLE_BYTES);
  createHash('sha256')
    .update(body)
    .digest()
    .copy(out, PREAMBLE_BYTES + body.length);
  return out;
}

/** Checks the preamble and returns the format version and the header length H. */
export function parsePreamble(bytes: Uint8Array): { version: LayerDigestVersion; headerLength: number } {
  if (bytes.length < PREAMBLE_BYTES) throw new KdnError('KV_CORRUPT', 'KV object shorter than its preamble');
  for (let i = 0; i < MAGIC.length; i++) {
    if (bytes[i] !== MAGIC[i]) throw new KdnError('KV_CORRUPT', 'not a KV object (bad magic)');
  }
  const version = readableVersion(bytes[MAGIC.length], 'format');
  const o = MAGIC.length + 1;
  const length = (bytes[o]! | (bytes[o + 1]! << 8) | (bytes[o + 2]! << 16) | (bytes[o + 3]! << 24)) >>> 0;
  if (length < 1 || length > MAX_HEADER_BYTES) {
    throw new KdnError('KV_CORRUPT', `KV header length ${length} outside 1..${MAX_HEADER_BYTES}`);
  }
  return { version, headerLength: length };
}

/** Bytes from the start of the object to the start of the payload, for a header of length H. */
export function payloadStart(headerLength: number): number {
  return PREAMBLE_BYTES + headerLength + HEADER_HASH_BYTES;
}

/**
 * Verifies the header hash, unpacks and validates the header. `body` and `hash` are the H and 32 bytes; `version`
 * is the preamble's, which the header must repeat.
 */
export function parseHeader(body: Uint8Array, hash: Uint8Array, version: LayerDigestVersion): KVHeader {
  const actual = createHash('sha256').update(body).digest();
  if (hash.length !== HEADER_HASH_BYTES || !actual.equals(hash)) {
    throw new KdnError('KV_CORRUPT', 'KV header checksum mismatch');
  }
  let values: unknown[];
  try {
    values = unpackr.unpackMultiple(Buffer.from(body.buffer, body.byteOffset, body.byteLength)) as unknown[];
  } catch (err) {
    throw new KdnError('KV_CORRUPT', `KV header is not valid msgpack: ${(err as Error).message}`, { cause: err });
  }
  if (values.length !== 1) throw new KdnError('KV_CORRUPT', 'KV header must be exactly one msgpack value');
  const header = validateHeader(values[0]);
  if (header.version !== version) {
    throw new KdnError('KV_CORRUPT', `KV preamble says format version ${version}, its header ${header.version}`);
  }
  return header;
}
