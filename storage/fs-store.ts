import { randomBytes } from 'node:crypto';
import type { BigIntStats, Dirent } from 'node:fs';
import * as fsp from 'node:fs/promises';
import path from 'node:path';
import { Readable, addAbortSignal } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { KdnError } from '../common/errors.ts';
import { resolveRange } from './byte-range.ts';
import { isValidKey, validateKey, validatePrefix } from './keys.ts';
import type { ByteRange, ObjectInfo, ObjectStore, ObjectStream, PutOptions } from './object-store.ts';

export interface FsStoreOptions {
  /** Temp files older than this are leftovers of crashed writers and are removed when the store opens. */
  staleTempMs?: number;
}

const DEFAULT_STALE_TEMP_MS = 60 * 60 * 1000;
/**
 * The origin holds the chunk-salt secret and manifests with the documents' text: its files are its owner's alone
 * (0600, folders 0700), and a root made by an older version is closed to others when the store opens.
 */
const FILE_MODE = 0o600;
const DIR_MODE = 0o700;
/** A put whose target directory vanished (pruned by a concurrent delete) recreates it and retries this often. */
const RENAME_ATTEMPTS = 3;

/**
 * Object store on a local filesystem.
 *
 * Layout under the root: `objects/<key>` holds each object as a plain file; `.tmp/` holds puts in progress. Keeping
 * both apart means no key (not even ".tmp/x") can collide with a temp file and list() never walks into one.
 *
 * put() writes a temp file, fsyncs it, renames it over the target (atomic on one filesystem) and fsyncs the
 * directory, so readers see the old object or the whole new one, and a crash leaves only an invisible temp file.
 *
 * etag: hex of inode, size and mtime in nanoseconds, read with fstat from the same open file that is served, so
 * it always describes the bytes returned. Every put renames a fresh inode into place, so any new content gets a
 * new etag (re-putting identical bytes also does: a spurious refetch, never a stale hit). A content hash would
 * need a sidecar that cannot be swapped atomically together with the object.
 *
 * Files cannot be directories: the key "a" and the key "a/b" cannot both exist here (unlike S3); the second put
 * fails with CONFLICT. Files are created 0600 and folders 0700.
 */
export class FsStore implements ObjectStore {
  readonly description: string;
  readonly root: string;
  private readonly objectsDir: string;
  private readonly tempDir: string;
  private readonly swept: Promise<void>;

  constructor(root: string, options: FsStoreOptions = {}) {
    this.root = path.resolve(root);
    this.description = `file:${this.root}`;
    this.objectsDir = path.join(this.root, 'objects');
    this.tempDir = path.join(this.root, '.tmp');
    this.swept = this.sweepTemp(options.staleTempMs ?? DEFAULT_STALE_TEMP_MS);
  }

  async put(key: string, body: Buffer | Uint8Array | Readable, options: PutOptions = {}): Promise<ObjectInfo> {
    validateKey(key);
    options.signal?.throwIfAborted();
    const target = this.pathOf(key);
    const temp = path.join(this.tempDir, `${randomBytes(12).toString('hex')}.part`);
    try {
      await fsp.mkdir(this.tempDir, { recursive: true, mode: DIR_MODE });
      const stats = await writeDurably(temp, body, options.signal);
      await this.renameIntoPlace(temp, target, key);
      return infoOf(key, stats);
    } catch (err) {
      await fsp.rm(temp, { force: true }).catch(() => undefined);
      throw putError(key, err, options.signal);
    }
  }

  async get(key: string, options: { signal?: AbortSignal } = {}): Promise<Buffer> {
    const { handle } = await this.openObject(key);
    try {
      return await handle.readFile(options.signal ? { signal: options.signal } : {});
    } catch (err) {
      throw storageError(`reading "${key}"`, err);
    } finally {
      await handle.close();
    }
  }

  async getStream(key: string, options: { range?: ByteRange; signal?: AbortSignal } = {}): Promise<ObjectStream> {
    const { handle, stats } = await this.openObject(key);
    let range: { start: number; end: number } | undefined;
    try {
      if (options.range) range = resolveRange(options.range, Number(stats.size));
    } catch (err) {
      await handle.close();
      throw err;
    }
    const stream: Readable = handle.createReadStream(range ? { start: range.start, end: range.end } : {});
    if (options.signal) addAbortSignal(options.signal, stream);
    return { info: infoOf(key, stats), stream, ...(range ? { range } : {}) };
  }

  async head(key: string): Promise<ObjectInfo | null> {
    validateKey(key);
    try {
      const stats = await fsp.stat(this.pathOf(key), { bigint: true });
      return stats.isFile() ? infoOf(key, stats) : null;
    } catch (err) {
      if (isMissing(err)) return null;
      throw storageError(`reading "${key}"`, err);
    }
  }

  async delete(key: string): Promise<boolean> {
    validateKey(key);
    const file = this.pathOf(key);
    try {
      await fsp.unlink(file);
    } catch (err) {
      if (isMissing(err) || errnoOf(err) === 'EISDIR' || errnoOf(err) === 'EPERM') return false;
      throw storageError(`deleting "${key}"`, err);
    }
    await this.pruneEmptyDirs(path.dirname(file));
    return true;
  }

  async *list(prefix: string): AsyncIterable<ObjectInfo> {
    validatePrefix(prefix);
    const slash = prefix.lastIndexOf('/');
    yield* this.walk(prefix.slice(0, slash + 1), prefix.slice(slash + 1));
  }

  async close(): Promise<void> {
    await this.swept;
  }

  private pathOf(key: string): string {
    return path.join(this.objectsDir, ...key.split('/'));
  }

  /** Opens an object's file for reading; a missing key, or a path that is a directory, is NOT_FOUND. */
  private async openObject(key: string): Promise<{ handle: fsp.FileHandle; stats: BigIntStats }> {
    validateKey(key);
    let handle: fsp.FileHandle;
    try {
      handle = await fsp.open(this.pathOf(key), 'r');
    } catch (err) {
      if (isMissing(err)) throw notFound(key);
      throw storageError(`reading "${key}"`, err);
    }
    const stats = await handle.stat({ bigint: true }).catch(async (err: unknown) => {
      await handle.close();
      throw storageError(`reading "${key}"`, err);
    });
    if (!stats.isFile()) {
      await handle.close();
      throw notFound(key);
    }
    return { handle, stats };
  }

  private async renameIntoPlace(temp: string, target: string, key: string): Promise<void> {
    const dir = path.dirname(target);
    for (let attempt = 1; ; attempt++) {
      try {
        await fsp.mkdir(dir, { recursive: true, mode: DIR_MODE });
        await fsp.rename(temp, target);
        break;
      } catch (err) {
        const code = errnoOf(err);
        if (code === 'ENOTDIR' || code === 'EEXIST' || code === 'EISDIR') {
          throw new KdnError('CONFLICT', `key "${key}" clashes with another key on the filesystem store`, {
            hint: 'the file store cannot hold both "a" and "a/b": pick keys where no key is a folder of another',
            cause: err,
          });
        }
        if (code !== 'ENOENT' || attempt === RENAME_ATTEMPTS) throw err;
      }
    }
    await fsyncDir(dir);
  }

  /** Removes now-empty folders up to the objects root; a concurrent put that loses its folder retries. */
  private async pruneEmptyDirs(dir: string): Promise<void> {
    for (let current = dir; current.startsWith(this.objectsDir + path.sep); current = path.dirname(current)) {
      try {
        await fsp.rmdir(current);
      } catch {
        return;
      }
    }
  }

  /**
   * Yields the objects under folder `dirKey` (a key prefix ending in '/', or '') whose names start with `namePrefix`,
   * in key order. Children sort by name with '/' appended to folders, because every key inside folder "a" starts
   * with "a/" and so sorts exactly where "a/" does among its siblings (for example after "a-b", before "a0").
   */
  private async *walk(dirKey: string, namePrefix: string): AsyncGenerator<ObjectInfo> {
    let entries: Dirent[];
    try {
      entries = await fsp.readdir(path.join(this.objectsDir, ...dirKey.split('/')), { withFileTypes: true });
    } catch (err) {
      if (isMissing(err)) return;
      throw storageError(`listing "${dirKey}"`, err);
    }
    const children = entries
      .filter((e) => e.name.startsWith(namePrefix) && (e.isFile() || e.isDirectory()))
      .map((e) => ({ name: e.name, isDir: e.isDirectory(), order: e.isDirectory() ? `${e.name}/` : e.name }))
      .sort((a, b) => (a.order < b.order ? -1 : a.order > b.order ? 1 : 0));
    for (const child of children) {
      const key = dirKey + child.name;
      if (!isValidKey(key)) continue;
      if (child.isDir) {
        yield* this.walk(`${key}/`, '');
      } else {
        const info = await this.head(key);
        if (info) yield info;
      }
    }
  }

  private async sweepTemp(staleMs: number): Promise<void> {
    await fsp.chmod(this.root, DIR_MODE).catch(() => undefined);
    const names = await fsp.readdir(this.tempDir).catch(() => [] as string[]);
    const cutoff = Date.now() - staleMs;
    await Promise.all(
      names.map(async (name) => {
        const file = path.join(this.tempDir, name);
        const stats = await fsp.stat(file).catch(() => null);
        if (stats && stats.mtimeMs <= cutoff) await fsp.rm(file, { force: true }).catch(() => undefined);
      }),
    );
  }
}

/** Writes `body` to a new file at `file`, with backpressure for streams, and fsyncs it before returning its stats. */
async function writeDurably(file: string, body: Buffer | Uint8Array | Readable, signal: AbortSignal | undefined): Promise<BigIntStats> {
  const handle = await fsp.open(file, 'wx', FILE_MODE);
  try {
    if (body instanceof Readable) {
      // Each chunk is written before the next is pulled: backpressure without a second buffer.
      await pipeline(
        body,
        async (source: AsyncIterable<Buffer | Uint8Array | string>) => {
          for await (const chunk of source) await handle.write(typeof chunk === 'string' ? Buffer.from(chunk) : chunk);
        },
        signal ? { signal } : {},
      );
    } else {
      await handle.writeFile(body, signal ? { signal } : {});
    }
    await handle.sync();
    return await handle.stat({ bigint: true });
  } finally {
    await handle.close();
  }
}

/** Makes a rename durable. Filesystems that cannot fsync a folder say EINVAL or ENOTSUP; the rename stands there. */
async function fsyncDir(dir: string): Promise<void> {
  const handle = await fsp.open(dir, 'r');
  try {
    await handle.sync();
  } catch (err) {
    const code = errnoOf(err);
    if (code !== 'EINVAL' && code !== 'ENOTSUP') throw err;
  } finally {
    await handle.close();
  }
}

function infoOf(key: string, stats: BigIntStats): ObjectInfo {
  return {
    key,
    size: Number(stats.size),
    etag: `${stats.ino.toString(16)}-${stats.size.toString(16)}-${stats.mtimeNs.toString(16)}`,
    lastModified: stats.mtime,
  };
}

function errnoOf(err: unknown): string | undefined {
  return typeof err === 'object' && err !== null && 'code' in err && typeof err.code === 'string' ? err.code : undefined;
}

/** ENOENT, or ENOTDIR when a parent of the path is a file (the key "a/b" while "a" is an object). */
function isMissing(err: unknown): boolean {
  const code = errnoOf(err);
  return code === 'ENOENT' || code === 'ENOTDIR';
}

function notFound(key: string): KdnError {
  return new KdnError('NOT_FOUND', `object "${key}" does not exist`, { hint: 'list() the prefix to see which keys exist' });
}

function storageError(action: string, err: unknown): KdnError {
  if (err instanceof KdnError) return err;
  const code = errnoOf(err);
  const hint =
    code === 'ENOSPC'
      ? 'the disk is full: free space or point the store elsewhere'
      : code === 'EACCES' || code === 'EPERM' || code === 'EROFS'
        ? 'the store root is not writable by this process'
        : 'check the store root folder and the disk';
  return new KdnError('STORAGE_ERROR', `${action} failed: ${err instanceof Error ? err.message : String(err)}`, { hint, cause: err });
}

function putError(key: string, err: unknown, signal: AbortSignal | undefined): KdnError {
  if (err instanceof KdnError) return err;
  if (signal?.aborted) {
    return signal.reason instanceof KdnError
      ? signal.reason
      : new KdnError('STORAGE_ERROR', `put of "${key}" was aborted`, { hint: 'nothing was stored; retry the put', cause: err });
  }
  return storageError(`put of "${key}"`, err);
}
