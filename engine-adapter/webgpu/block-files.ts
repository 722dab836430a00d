/**
 * The files verified blocks name as their source (storage KVBlockSource): a same-host edge's shared-memory copies.
 * A block is read from its file by libuv's thread pool straight into the staging buffer it goes up from, so that
 * copy runs on the pool's threads, several at once, instead of on the engine's thread: copying every staged byte
 * was most of that thread's time for an injected context (tools/gpu/upload-bandwidth.ts: 28-33 GB/s into mapped
 * staging through the pool, against 15-18 GB/s for one thread copying, which then does nothing else).
 *
 * A file is opened here, by its path, and read only while it is still the very file its blocks were verified from
 * (block-source.ts fileIdentity); otherwise, or when a read fails, the caller copies the block's own bytes.
 */
import { close, fstat, open, read } from 'node:fs';
import { fileIdentity } from '../../storage/kv-object/index.ts';
import type { KVBlockSource } from '../../storage/kv-object/types.ts';

/**
 * A file with no read in flight is closed after this long: an object's layers arrive over tens of milliseconds, and
 * an open descriptor keeps an evicted (unlinked) file's memory allocated.
 */
const IDLE_MS = 1_000;

interface OpenFile {
  /** The descriptor, or null when the path no longer names the verified file (or could not be opened). */
  fd: Promise<number | null>;
  reads: number;
  idleSince: number;
}

export class BlockFiles {
  private readonly files = new Map<string, OpenFile>();
  private sweep: NodeJS.Timeout | undefined;

  /**
   * Fills `into` with the source's bytes; false when they cannot be read from there (the file was replaced or is
   * gone, a read failed or came short), and the caller copies the block's own bytes instead.
   */
  async read(source: KVBlockSource, into: Uint8Array): Promise<boolean> {
    const file = this.file(source);
    file.reads++;
    try {
      const fd = await file.fd;
      return fd !== null && (await readFully(fd, into, source.position));
    } finally {
      if (--file.reads === 0) {
        file.idleSince = performance.now();
        this.sweep ??= setTimeout(() => this.closeIdle(), IDLE_MS).unref();
      }
    }
  }

  /** Closes every file; call it once no read is in flight. */
  async close(): Promise<void> {
    clearTimeout(this.sweep);
    const files = [...this.files.values()];
    this.files.clear();
    await Promise.all(files.map(async (f) => closeFd(await f.fd)));
  }

  private file(source: KVBlockSource): OpenFile {
    const key = `${source.path}\0${source.identity}`;
    let file = this.files.get(key);
    if (file === undefined) {
      file = { fd: openVerified(source), reads: 0, idleSince: 0 };
      this.files.set(key, file);
    }
    return file;
  }

  private closeIdle(): void {
    this.sweep = undefined;
    const now = performance.now();
    for (const [key, file] of this.files) {
      if (file.reads > 0) continue;
      if (now - file.idleSince < IDLE_MS) {
        this.sweep ??= setTimeout(() => this.closeIdle(), IDLE_MS).unref();
        continue;
      }
      this.files.delete(key);
      void file.fd.then(closeFd);
    }
  }
}

/** The source's file opened for reading, or null unless it is the file the block was verified from. */
function openVerified(source: KVBlockSource): Promise<number | null> {
  return new Promise((resolve) => {
    open(source.path, 'r', (err, fd) => {
      if (err) return resolve(null);
      fstat(fd, (statErr, stats) => {
        if (!statErr && fileIdentity(stats) === source.identity) return resolve(fd);
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
