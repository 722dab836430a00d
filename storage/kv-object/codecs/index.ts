import { KdnError } from '../../../common/errors.ts';
import type { CodecSpec } from '../types.ts';
import type { LayerCodec } from './codec.ts';
import { fp16Codec } from './fp16.ts';
import { int4Codec } from './int4.ts';
import { int8Codec } from './int8.ts';

export type { LayerCodec, LayerShape } from './codec.ts';

export const DEFAULT_GROUP_SIZE = 32;
export const MAX_GROUP_SIZE = 4096;

/** The codec a spec names, bound to its group size; an unknown name or bad group size is KV_UNSUPPORTED. */
export function codecFor(spec: CodecSpec): LayerCodec {
  switch (spec.name) {
    case 'fp16':
      if (spec.groupSize !== undefined) throw new KdnError('KV_UNSUPPORTED', 'fp16 takes no groupSize');
      return fp16Codec;
    case 'int8':
      return int8Codec(checkGroupSize(spec.groupSize));
    case 'int4':
      return int4Codec(checkGroupSize(spec.groupSize));
    default:
      throw new KdnError('KV_UNSUPPORTED', `unknown codec ${JSON.stringify((spec as { name: unknown }).name)}`, {
        hint: 'codecs are fp16, int8 and int4',
      });
  }
}

function checkGroupSize(groupSize: number | undefined): number {
  if (groupSize === undefined || !Number.isInteger(groupSize) || groupSize < 1 || groupSize > MAX_GROUP_SIZE) {
    throw new KdnError('KV_UNSUPPORTED', `groupSize must be an integer in 1..${MAX_GROUP_SIZE}, got ${String(groupSize)}`);
  }
  return groupSize;
}
