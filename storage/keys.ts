import { KdnError } from '../common/errors.ts';

/** Longest key accepted, in bytes; S3 allows 1024 and we keep room for a store prefix. */
export const MAX_KEY_BYTES = 512;

const SEGMENT = /^[A-Za-z0-9._=-]+$/;

/**
 * Object keys are '/'-separated segments of [A-Za-z0-9._=-], no segment '.' or '..', no leading or trailing '/',
 * no empty segment. That keeps keys safe as file paths and as URL paths without escaping.
 */
export function validateKey(key: unknown): string {
  if (typeof key !== 'string' || key.length === 0) {
    throw new KdnError('INVALID_KEY', 'object key must be a non-empty string', { hint: 'use keys like "ns/doc/chunk-0001.kv"' });
  }
  if (Buffer.byteLength(key) > MAX_KEY_BYTES) {
    throw new KdnError('INVALID_KEY', `object key is longer than ${MAX_KEY_BYTES} bytes`, { hint: 'use shorter keys' });
  }
  if (key.startsWith('/')) {
    throw new KdnError('INVALID_KEY', `object key "${printable(key)}" is absolute`, { hint: 'keys are relative: drop the leading "/"' });
  }
  for (const segment of key.split('/')) {
    if (segment === '' || segment === '.' || segment === '..') {
      throw new KdnError('INVALID_KEY', `object key "${printable(key)}" has an empty, "." or ".." segment`, {
        hint: 'keys may not traverse paths; use plain segments separated by single "/"',
      });
    }
    if (!SEGMENT.test(segment)) {
      throw new KdnError('INVALID_KEY', `object key "${printable(key)}" has characters outside [A-Za-z0-9._=-/]`, {
        hint: 'encode other characters (for example as hex) before using them in a key',
      });
    }
  }
  return key;
}

/** Where chunk KV objects live; everything else at the origin (manifests, secrets) is a control object. */
export const CHUNK_KEY_PREFIX = 'kv/';
const CHUNK_KEY_SUFFIX = '.kv';

/** Whether `key` (already valid) names a chunk KV object: the only objects an edge serves, stores or warms. */
export function isChunkKey(key: string): boolean {
  return (
    key.startsWith(CHUNK_KEY_PREFIX) && key.endsWith(CHUNK_KEY_SUFFIX) && key.length > CHUNK_KEY_PREFIX.length + CHUNK_KEY_SUFFIX.length
  );
}

/** Whether validateKey accepts `key` (stores skip foreign names they find when listing). */
export function isValidKey(key: string): boolean {
  try {
    validateKey(key);
    return true;
  } catch {
    return false;
  }
}

/** Prefixes for list(): '' or a key-like string that may end with '/'. */
export function validatePrefix(prefix: unknown): string {
  if (prefix === '') return '';
  if (typeof prefix !== 'string') throw new KdnError('INVALID_KEY', 'prefix must be a string');
  validateKey(prefix.endsWith('/') ? prefix.slice(0, -1) : prefix);
  return prefix;
}

function printable(key: string): string {
  const shown = key.length > 80 ? `${key.slice(0, 80)}...` : key;
  return JSON.stringify(shown).slice(1, -1);
}

/** Where transform tables (kv-object/codecs/transform-table.ts) live at the origin: one folder per model. */
export const TRANSFORM_TABLE_PREFIX = 'transform-tables/';

/** The folder of one model's tables; fingerprints are hex digests, so they are key-safe as they are. */
export function transformTablePrefix(modelFingerprint: string): string {
  return validatePrefix(`${TRANSFORM_TABLE_PREFIX}${modelFingerprint}/`);
}

/** A table's key: by model and by the table's own sha256, so a key never holds two different tables. */
export function transformTableKey(modelFingerprint: string, tableHash: string): string {
  return validateKey(`${transformTablePrefix(modelFingerprint)}${tableHash}.ktt`);
}
