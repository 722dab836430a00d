import { KdnError } from '../../common/errors.ts';
import type { CodecSpec } from './types.ts';
import { DEFAULT_GROUP_SIZE } from './codecs/index.ts';

const CODEC_PATTERN = /^(fp16|int8|int4)(\+lz4)?$/;

/** Parses a CLI/config codec name: fp16, int8 or int4, each optionally "+lz4" (e.g. "int8+lz4"). */
export function codecFromString(text: string, groupSize: number = DEFAULT_GROUP_SIZE): CodecSpec {
  const match = CODEC_PATTERN.exec(text.trim().toLowerCase());
  if (!match) {
    throw new KdnError('INVALID_ARGUMENT', `unknown codec "${text}"`, {
      hint: 'use fp16, int8 or int4, optionally followed by +lz4 (e.g. int8+lz4)',
    });
  }
  const name = match[1] as CodecSpec['name'];
  const lz4 = match[2] !== undefined;
  return name === 'fp16' ? { name, lz4 } : { name, lz4, groupSize };
}

/** The inverse of codecFromString, for logs and CLI output. */
export function codecToString(spec: CodecSpec): string {
  return `${spec.name}${spec.lz4 ? '+lz4' : ''}`;
}
