import { createHash } from 'node:crypto';
import { KdnError } from '../../common/errors.ts';

/** sha256 hex of the token ids as little-endian uint32: the KV object's `tokenHash`. */
export function tokenHash(tokenIds: ArrayLike<number>): string {
  const bytes = Buffer.alloc(4 * tokenIds.length);
  for (let i = 0; i < tokenIds.length; i++) {
    const id = tokenIds[i]!;
    if (!Number.isInteger(id) || id < 0 || id > 0xffffffff) {
      throw new KdnError('INVALID_ARGUMENT', `token id at ${i} is ${id}, not a uint32`);
    }
    bytes.writeUInt32LE(id, 4 * i);
  }
  return createHash('sha256').update(bytes).digest('hex');
}
