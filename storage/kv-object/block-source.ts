import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { KdnError } from '../../common/errors.ts';
import { verifiedBlock } from './layer-block.ts';
import type { KVBlock, KVBlockSource, KVHeader, KVLayerBlock } from './types.ts';

/**
 * The identity of a file a block source names (types.ts KVBlockSource): what a reader compares, after opening the
 * path itself, to make sure it reads the very file whose bytes were verified. A file replaced under the same name
 * has another inode or modification time.
 */
export function fileIdentity(stats: { dev: number; ino: number; size: number; mtimeMs: number }): string {
  return `${stats.dev}:${stats.ino}:${stats.size}:${stats.mtimeMs}`;
}

/**
 * The bytes `source` names, read on this thread from the very file they were verified from. EDGE_UNAVAILABLE when
 * the path no longer names that file (the edge evicted or replaced it since), KV_CORRUPT when it ends too soon; the
 * object is then fetched again.
 */
export function readBlockSource(source: KVBlockSource): Uint8Array {
  let fd: number;
  try {
    fd = openSync(source.path, 'r');
  } catch (err) {
    throw sourceGone(source, (err as Error).message);
  }
  try {
    if (fileIdentity(fstatSync(fd)) !== source.identity) throw sourceGone(source, 'the file was replaced after it was verified');
    const bytes = new Uint8Array(source.length);
    for (let done = 0; done < bytes.length; ) {
      const n = readSync(fd, bytes, done, bytes.length - done, source.position + done);
      if (n === 0) {
        throw new KdnError('KV_CORRUPT', `${source.path} ends before its verified KV block does`, { hint: 'refetch the object' });
      }
      done += n;
    }
    return bytes;
  } finally {
    closeSync(fd);
  }
}

/** `block` with its bytes: itself, or a KVFileBlock's read from its file (readBlockSource), for `header`'s object. */
export function layerBlockOf(header: KVHeader, block: KVBlock): KVLayerBlock {
  return block.encoded === undefined ? verifiedBlock(header, block.layer, readBlockSource(block.source), block.source) : block;
}

/** The error for a block whose file is no longer the one it was verified from. */
export function sourceGone(source: KVBlockSource, why: string): KdnError {
  return new KdnError('EDGE_UNAVAILABLE', `the verified KV block in ${source.path} can no longer be read: ${why}`, {
    hint: 'refetch the object',
  });
}
