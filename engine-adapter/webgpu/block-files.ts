/**
 * The files verified blocks name as their source (storage KVBlockSource): a same-host edge's shared-memory copies.
 * A block is read from its file by libuv's thread pool straight into the staging buffer it goes up from, so that
 * copy runs on the pool's threads, several at once, instead of on the engine's thread: copying every staged byte
 * was most of that thread's time for an injected context (bench/results/gpu/upload-file-read-h200.json: 28-33 GB/s
 * into mapped staging through the pool, against 15-18 GB/s for one thread copying, which then does nothing else).
 *
 * A file is opened here, by its path, and read only if it is still the very file its blocks were verified from
 * (block-source.ts fileIdentity); otherwise the caller copies the block's own bytes.
 */
import { close, fstat, open, read } from 'node:fs';
import { fileIdentity, sourcePaths } from '../../storage/kv-object/index.ts';
import type { KVBlockSource } from '../../storage/kv-object/types.ts';

/**
 * A file no writer holds is closed after this long: an object's layers arrive over tens of milliseconds, and
 * an open descriptor keeps an evicted (unlinked) file's memory allocated.
 */
const IDLE_MS = 1_000;

interface OpenFile {
  /** The descriptor, or null when the path no longer names the verified file (or could not be opened). */
  fd: Promise<number | null>;
  /** Writers holding it (BlockFiles.acquire) until their reads are done: it is not closed meanwhile. */
  holds: number;
  idleSince: number;
}

/** A file held open for reads from it (BlockFiles.acquire); release it once they are done. */
export interface HeldFile {
  /** Fills all of `into` from the file's bytes at `position` on; false when a read fails or the file ends first. */
  read(into: Uint8Array, position: number): Promise<boolean>;
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
      file = { fd: openVerified(source), holds: 0, idleSince: 0 };
      this.files.set(key, file);
    }
    file.holds++;
    const fd = await file.fd;
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
    return { read: (into, position) => readFully(fd, into, position), release };
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
        if (!statErr && fileIdentity(stats) === identity) return resolve(fd);
        closeFd(fd);
        resolve(null);
      });
    });
  });
}

/** Reads all of `into` from `position` on; false when a read fails or the file ends first. */
async function readFully(fd: number, into: Uint8Array, position: number): Promise<boolean> {
  for (let at = 0; at < into.length; ) {
    const got = await new Promise<number>((resolve) =>
      read(fd, into, at, into.length - at, position + at, (err, bytes) => resolve(err ? 0 : bytes)),
    );
    if (got === 0) return false;
    at += got;
  }
  return true;
}

function closeFd(fd: number | null): void {
  if (fd !== null) close(fd, () => undefined);
}
