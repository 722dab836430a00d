import { layerDigestOffThread } from './hash-pool.ts';
import { layerDigest } from './layer-digest.ts';
import { KdnError } from '../../common/errors.ts';
import type { KVBlockSource, KVHeader, KVLayerBlock } from './types.ts';
import { codecFor } from './codecs/index.ts';
import { layerShape } from './header.ts';
import { lz4Unframe, lz4UnframeOffThread } from './lz4.ts';

/**
 * Blocks at least this large are hashed on a worker (and un-lz4'd on libuv's pool) by openLayerBlockOffThread;
 * smaller ones cost less on the event loop than the hop to another thread and back.
 */
export const OFF_THREAD_MIN_BYTES = 64 * 1024;

/**
 * Verifies stored layer block `layer` against its header checksum, undoes lz4 (bounded by the codec size) and
 * returns it as a KVLayerBlock. The caller has already cut `stored` to the header's layerOffsets. The codec is bound
 * only to undo lz4 or to decode, so a process without a transform object's table (an edge) still verifies it.
 */
export function openLayerBlock(header: KVHeader, layer: number, stored: Uint8Array): KVLayerBlock {
  checkDigest(header, layer, layerDigest(header.version, stored));
  const shape = layerShape(header);
  const encoded = header.codec.lz4 ? lz4Unframe(stored, codecFor(header.codec).expectedSize(shape, layer)) : stored;
  return verifiedBlock(header, layer, encoded);
}

/**
 * openLayerBlock with the layer digest on a worker thread (hash-pool.ts) and lz4 on libuv's pool: while one stream's
 * block is being hashed, the event loop keeps receiving the other streams, and blocks of parallel streams hash on
 * other cores. Same checks, same result; nothing is returned before the checksum matched. `block` may travel to
 * the worker and back: the caller must not use it again (the returned block's bytes replace it).
 */
export async function openLayerBlockOffThread(header: KVHeader, layer: number, block: Uint8Array): Promise<KVLayerBlock> {
  if (block.length < OFF_THREAD_MIN_BYTES) return openLayerBlock(header, layer, block);
  const { digest, bytes: stored } = await layerDigestOffThread(header.version, block);
  checkDigest(header, layer, digest);
  const shape = layerShape(header);
  const encoded = header.codec.lz4 ? await lz4UnframeOffThread(stored, codecFor(header.codec).expectedSize(shape, layer)) : stored;
  return verifiedBlock(header, layer, encoded);
}

/**
 * A layer block whose checksum was verified (here or on another thread) and whose lz4 framing is undone. The codec
 * is bound when the block is decoded, not before: a transform object's table may be registered after its header
 * arrived, and codecFor caches what it binds. `source`: where the same bytes lie in a file that never changes.
 */
export function verifiedBlock(header: KVHeader, layer: number, encoded: Uint8Array, source?: KVBlockSource): KVLayerBlock {
  return { layer, encoded, source, decode: () => codecFor(header.codec).decode(encoded, layerShape(header), layer) };
}

function checkDigest(header: KVHeader, layer: number, digest: string): void {
  if (digest !== header.layerChecksums[layer]) {
    throw new KdnError('KV_CORRUPT', `KV object layer ${layer} checksum mismatch`, { hint: 'refetch the object' });
  }
}
