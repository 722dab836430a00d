/**
 * The files verified blocks name as their source (storage KVBlockSource): a same-host edge's shared-memory copies.
 * A block is read from its file by libuv's thread pool straight into the staging buffer it goes up from, so that
 * copy runs on the pool's threads, several at once, instead of on the engine's thread: copying every staged byte
 * was most of that thread's time for an injected context (bench/results/gpu/upload-file-read-h200.json: 28-33 GB/s
 * into mapped staging through the pool, against 15-18 GB/s for one thread copying, which then does nothing else).
 *
 * A file is opened here, by its path, and read only if it is still the very file its blocks were verified from
 * (block-source.ts isIdentified); otherwise the caller copies the block's own bytes.
 */
import { close, fstat, open } from 'node:fs';
import { readFully } from '../../common/read-fully.ts';
import { isIdentified, sourcePaths } from '../../storage/kv-object/index.ts';
import type { KVBlockSource } from '../../storage/kv-object/types.ts';

/**
 * A file no writer holds is closed after this long: an object's layers arrive over tens of milliseconds, and an open
 * descriptor keeps an unlinked file's memory allocated (an evicted edge file, or a fetch thread's spool file, which
 * is unlinked from the start: kdn/query/receive-spool.ts).
 */
const IDLE_MS = 250;

interface OpenFile {
  /** The descriptor, or null when the path no longer names the verified file (or could not be opened). */
  fd: Promise<number | null>;
  /** The same once known (undefined while opening): most blocks of a file find it open and need not wait. */
  opened: number | null | undefined;
  /** Writers holding it (BlockFiles.acquire) until their reads are done: it is not closed meanwhile. */
  holds: number;
  idleSince: number;
}

/** A file held open for reads from it (BlockFiles.acquire); release it once they are done. */
export interface HeldFile {
  /**
   * Fills all of `into` from the file's bytes at `position` on, then calls `done`: with false when a read failed or
   * the file ended first. A callback rather than a promise: an 8k-token 8B context is about a thousand blocks, and
   * each promise of a chain is garbage on the engine's thread.
   */
  read(into: Uint8Array, position: number, done: (ok: boolean) => void): void;
  release(): void;
}

export class BlockFiles {
  private readonly files = new Map<string, OpenFile>();
  private sweep: NodeJS.Timeout | undefined;

  /** `idleMs`: how long a file no writer holds stays open (tests shorten it). */
  constructor(private readonly idleMs = IDLE_MS) {}

  /**
   * The source's file, held open; null when its bytes cannot be read from there (the file was replaced or is gone),
   * and the caller copies the block's own bytes instead.
   */
  async acquire(source: KVBlockSource): Promise<HeldFile | null> {
    const key = `${source.path}\0${source.identity}`;
    let file = this.files.get(key);
    if (file === undefined) {
      const opening: OpenFile = { fd: openVerified(source), opened: undefined, holds: 0, idleSince: 0 };
      void opening.fd.then((fd) => (opening.opened = fd));
      file = opening;
      this.files.set(key, file);
    }
    file.holds++;
    const fd = file.opened !== undefined ? file.opened : await file.fd;
    const held = file;
    const release = (): void => {
      if (--held.holds > 0) return;
      held.idleSince = performance.now();
      this.sweep ??= setTimeout(() => this.closeIdle(), this.idleMs).unref();
    };
    if (fd === null) {
      release();
      return null;
    }
    return { read: (into, position, done) => readFully(fd, into, position, done), release };
  }

  /** Closes every file; call it once no file is held. */
  async close(): Promise<void> {
    clearTimeout(this.sweep);
    const files = [...this.files.values()];
    this.files.clear();
    await Promise.all(files.map(async (f) => closeFd(await f.fd)));
  }

  private closeIdle(): void {
    this.sweep = undefined;
    const now = performance.now();
    for (const [key, file] of this.files) {
      if (file.holds > 0) continue;
      if (now - file.idleSince < this.idleMs) {
        this.sweep ??= setTimeout(() => this.closeIdle(), this.idleMs).unref();
        continue;
      }
      this.files.delete(key);
      void file.fd.then(closeFd);
    }
  }
}

/** The source's file opened for reading (by its pin first), or null unless it is the file the block was verified from. */
async function openVerified(source: KVBlockSource): Promise<number | null> {
  for (const path of sourcePaths(source)) {
    const fd = await openIdentified(path, source.identity);
    if (fd !== null) return fd;
  }
  return null;
}

function openIdentified(path: string, identity: string): Promise<number | null> {
  return new Promise((resolve) => {
    open(path, 'r', (err, fd) => {
      if (err) return resolve(null);
      fstat(fd, (statErr, stats) => {
        if (!statErr && isIdentified(stats, identity)) return resolve(fd);
        closeFd(fd);
        resolve(null);
      });
    });
  });
}

function closeFd(fd: number | null): void {
  if (fd !== null) close(fd, () => undefined);
}
