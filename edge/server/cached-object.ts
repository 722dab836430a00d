import { createHash } from 'node:crypto';
import type { KVHeader } from '../../storage/kv-object/types.ts';

/** A verified KV object as the tiers hold it. */
export interface CachedObject {
  body: Buffer;
  /** Strong ETag (quoted), the same on every edge for the same object. */
  etag: string;
}

/**
 * The ETag is derived from the verified header, not from a hash of all the bytes: the header carries the payload
 * checksum (which covers every layer block), so two objects with equal headers are equal, and computing it costs
 * nothing on top of verification.
 */
export function etagFor(header: KVHeader): string {
  return `"${createHash('sha256').update(JSON.stringify(header)).digest('hex').slice(0, 32)}"`;
}
