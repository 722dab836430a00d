import { closeSync, existsSync, fstatSync, openSync, readSync } from 'node:fs';
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
 * The identity of a private file that is appended to while blocks in it are read (kdn/query/receive-spool.ts): its
 * device and inode alone, since every append moves its size and modification time. Only for a file unlinked as soon
 * as it was made and reached by its descriptor's path (KVBlockSource.pin), which nothing can replace under it.
 */
export function appendedFileIdentity(stats: { dev: number; ino: number }): string {
  return `${stats.dev}:${stats.ino}`;
}

/** Whether an open file with `stats` is the one `identity` names (fileIdentity, or appendedFileIdentity). */
export function isIdentified(stats: { dev: number; ino: number; size: number; mtimeMs: number }, identity: string): boolean {
  return identity === fileIdentity(stats) || identity === appendedFileIdentity(stats);
}

const PIN_DIR = existsSync('/proc/self/fd') ? '/proc/self/fd' : undefined;

/**
 * A path to the open file `fd` refers to, for KVBlockSource.pin: valid for any thread of this process while `fd`
 * stays open, even once the file's own name is gone; undefined where the system has no such paths.
 */
export function pinPath(fd: number): string | undefined {
  return PIN_DIR && `${PIN_DIR}/${fd}`;
}

/** The paths a reader may open for `source`, the pinned one first. */
export function sourcePaths(source: KVBlockSource): string[] {
  return source.pin === undefined ? [source.path] : [source.pin, source.path];
}

/**
 * The bytes `source` names, read on this thread from the very file they were verified from. EDGE_UNAVAILABLE when
 * no path of it names that file any more (the edge evicted or replaced it since), KV_CORRUPT when it ends too soon;
 * the object is then fetched again.
 */
export function readBlockSource(source: KVBlockSource): Uint8Array {
  const fd = sourcePaths(source).reduce<number | null>((found, path) => found ?? openIdentified(path, source.identity), null);
  if (fd === null) throw sourceGone(source, 'the file was evicted or replaced after it was verified');
  try {
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

/** `path` opened for reading if it names the file of `identity`, else null. */
function openIdentified(path: string, identity: string): number | null {
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch {
    return null;
  }
  try {
    if (isIdentified(fstatSync(fd), identity)) return fd;
  } catch {
    // unreadable: not the verified file
  }
  closeSync(fd);
  return null;
}

/** The error for a block whose file is no longer the one it was verified from. */
export function sourceGone(source: KVBlockSource, why: string): KdnError {
  return new KdnError('EDGE_UNAVAILABLE', `the verified KV block in ${source.path} can no longer be read: ${why}`, {
    hint: 'refetch the object',
  });
}
