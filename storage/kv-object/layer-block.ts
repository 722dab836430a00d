import { createHash } from 'node:crypto';
import { KdnError } from '../../common/errors.ts';
import type { KVHeader, KVLayerBlock } from './types.ts';
import { codecFor } from './codecs/index.ts';
import { layerShape } from './header.ts';
import { lz4Unframe } from './lz4.ts';

/**
 * Verifies stored layer block `layer` against its header checksum, undoes lz4 (bounded by the codec size) and
 * returns it as a KVLayerBlock. The caller has already cut `stored` to the header's layerOffsets.
 */
export function openLayerBlock(header: KVHeader, layer: number, stored: Uint8Array): KVLayerBlock {
  const digest = createHash('sha256').update(stored).digest('hex');
  if (digest !== header.layerChecksums[layer]) {
    throw new KdnError('KV_CORRUPT', `KV object layer ${layer} checksum mismatch`, { hint: 'refetch the object' });
  }
  const codec = codecFor(header.codec);
  const shape = layerShape(header);
  const encoded = header.codec.lz4 ? lz4Unframe(stored, codec.expectedSize(shape)) : stored;
  return { layer, encoded, decode: () => codec.decode(encoded, shape) };
}
