import { compressSync, uncompress, uncompressSync } from 'lz4-napi';
import { KdnError } from '../../common/errors.ts';

/**
 * lz4 framing of one layer block: the lz4 block format with its decoded length prepended as u32 LE (what
 * lz4-napi's compressSync writes). The LZ4 frame format was not used because its decoded size is not known
 * before decompressing; here the prefix must equal the codec's expected block size before anything is
 * allocated, so decompression is bounded by the size the header already promised.
 */

/** lz4 expands at worst to this many bytes (lz4_flex's bound plus the 4-byte length prefix). */
export function lz4MaxStoredSize(decodedSize: number): number {
  return 4 + 20 + Math.ceil((decodedSize * 110) / 100);
}

/** lz4 cannot compress better than 255:1, so a smaller stored block is a lie about its decoded size. */
export function lz4MinStoredSize(decodedSize: number): number {
  return 4 + Math.floor(decodedSize / 256);
}

export function lz4Frame(encoded: Uint8Array): Uint8Array {
  return compressSync(Buffer.from(encoded.buffer, encoded.byteOffset, encoded.byteLength));
}

export function lz4Unframe(stored: Uint8Array, decodedSize: number): Uint8Array {
  checkPrefix(stored, decodedSize);
  let out: Uint8Array;
  try {
    out = uncompressSync(stored);
  } catch (err) {
    throw undecodable(err);
  }
  return checkDecoded(out, decodedSize);
}

/** lz4Unframe on libuv's thread pool (lz4-napi's async uncompress), for large blocks on a busy event loop. */
export async function lz4UnframeOffThread(stored: Uint8Array, decodedSize: number): Promise<Uint8Array> {
  checkPrefix(stored, decodedSize);
  let out: Uint8Array;
  try {
    out = await uncompress(stored);
  } catch (err) {
    throw undecodable(err);
  }
  return checkDecoded(out, decodedSize);
}

/** The length prefix must promise exactly the codec's size before anything is allocated. */
function checkPrefix(stored: Uint8Array, decodedSize: number): void {
  if (stored.length < 4) throw new KdnError('KV_CORRUPT', 'lz4 block shorter than its length prefix');
  const declared = (stored[0]! | (stored[1]! << 8) | (stored[2]! << 16) | (stored[3]! << 24)) >>> 0;
  if (declared !== decodedSize) {
    throw new KdnError('KV_CORRUPT', `lz4 block declares ${declared} decoded bytes, the header implies ${decodedSize}`);
  }
}

function undecodable(err: unknown): KdnError {
  return new KdnError('KV_CORRUPT', `lz4 block does not decompress: ${(err as Error).message}`, { cause: err });
}

function checkDecoded(out: Uint8Array, decodedSize: number): Uint8Array {
  if (out.length !== decodedSize) {
    throw new KdnError('KV_CORRUPT', `lz4 block decoded to ${out.length} bytes, expected ${decodedSize}`);
  }
  return out;
}
