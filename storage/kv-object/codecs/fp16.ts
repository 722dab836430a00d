import { KdnError } from '../../../common/errors.ts';
import type { KVLayerTensors } from '../types.ts';
import { readHalves, writeHalves } from '../half.ts';
import { tensorElements, type LayerCodec, type LayerShape } from './codec.ts';

/**
 * fp16: raw IEEE half, little-endian. Block layout (n = tokens * kvHeads * headDim):
 *   keys:   f16[n]  [tokens][kvHeads][headDim] row-major
 *   values: f16[n]  same order, starting at byte 2n
 * Round to nearest even, so |error| <= 2^-11 * |x| for normal halves (|x| >= 2^-14) and <= 2^-25 below.
 */
export const fp16Codec: LayerCodec = {
  expectedSize(shape: LayerShape): number {
    return 4 * tensorElements(shape);
  },

  encode(layer: KVLayerTensors, shape: LayerShape): Uint8Array {
    const n = tensorElements(shape);
    const out = new Uint8Array(4 * n);
    writeHalves(layer.keys, out, 0);
    writeHalves(layer.values, out, 2 * n);
    return out;
  },

  decode(bytes: Uint8Array, shape: LayerShape): KVLayerTensors {
    const n = tensorElements(shape);
    if (bytes.length !== 4 * n) throw new KdnError('KV_CORRUPT', `fp16 block is ${bytes.length} bytes, expected ${4 * n}`);
    return { keys: readHalves(bytes, 0, n), values: readHalves(bytes, 2 * n, n) };
  },
};
