import { KdnError } from '../../common/errors.ts';
import type { CodecSpec } from './types.ts';
import { CODECS, DEFAULT_GROUP_SIZE, codecEntry, transformLevelName } from './codecs/index.ts';

const CODEC_PATTERN = /^([a-z0-9]+)(?::([a-z0-9-]+))?(\+lz4)?$/;

/**
 * Parses a CLI/config codec name: "name[:option][+lz4]", e.g. fp16, int8+lz4, int4, transform, transform:x16.
 * A transform spec has no table yet: whoever encodes fills in the model's table hash.
 */
export function codecFromString(text: string, groupSize: number = DEFAULT_GROUP_SIZE): CodecSpec {
  const match = CODEC_PATTERN.exec(text.trim().toLowerCase());
  const name = match?.[1];
  if (!match || name === undefined || !Object.hasOwn(CODECS, name)) {
    throw new KdnError('INVALID_ARGUMENT', `unknown codec "${text}"`, {
      hint: 'use fp16, int8 or int4, optionally followed by +lz4 (e.g. int8+lz4), or transform[:level] (e.g. transform:x8)',
    });
  }
  return codecEntry(name).fromString(match[2], match[3] !== undefined, groupSize);
}

/** The inverse of codecFromString (the table hash aside), for logs, manifests and CLI output. */
export function codecToString(spec: CodecSpec): string {
  const option = spec.name === 'transform' && spec.level !== undefined ? `:${transformLevelName(spec.level)}` : '';
  return `${spec.name}${option}${spec.lz4 ? '+lz4' : ''}`;
}
