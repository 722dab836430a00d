/**
 * Memory files (tmpfs) a fetch thread writes the verified layer blocks it received over HTTP into, when it routes
 * them to the engine's thread (block-outlet.ts). They then go there as where they lie (storage KVFileBlock), as a
 * same-host edge's shared-memory blocks do: the engine's thread has libuv's pool read them into its staging buffers,
 * several at once (engine-adapter/webgpu/block-files.ts), instead of copying every received byte itself, and the
 * fetch thread neither waits for its buffers back (hand-over-window.ts) nor adds them to that thread's heap. Over
 * sockets that copy, one thread's, was the engine thread's largest item, and the blocks it had not taken yet held
 * the fetch threads back (bench/HISTORY.md).
 *
 * Each routed object gets a file of its own, opened with a random name under `dir`, mode 0600, and unlinked at once:
 * only this process reaches it, by the descriptor's /proc path (block-source.ts pinPath). It is closed once the
 * engine's thread is done with the object (BlockOutlet.holdOpen); its memory goes when the engine's own descriptor
 * closes too, a quarter of a second after its last read (block-files.ts). What one thread holds in open files is
 * bounded: past the bound, or when the folder is full (a container's small /dev/shm), blocks go with their bytes.
 */
import { randomUUID } from 'node:crypto';
import { closeSync, existsSync, fstatSync, openSync, unlinkSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { appendedFileIdentity, pinPath } from '../../storage/kv-object/index.ts';
import type { KVBlockSource } from '../../storage/kv-object/types.ts';

/** Where spool files go by default: memory, and the only place where writing them is cheaper than the copy they save. */
export const DEFAULT_SPOOL_DIR = '/dev/shm';
/** After a write failed (the folder is full), blocks go with their bytes for this long before files are tried again. */
const PAUSE_MS = 5_000;

/** What a spool took, since it was made: bytes written to its files, bytes that went with their bytes instead. */
export interface SpoolStats {
  spooledBytes: number;
  sentBytes: number;
  /** Files that could not be made, and writes that failed (a full folder). */
  failures: number;
}

export class ReceiveSpool {
  readonly stats: SpoolStats = { spooledBytes: 0, sentBytes: 0, failures: 0 };
  /** Bytes written to files this thread still holds open. */
  private held = 0;
  private pausedUntil = 0;

  private constructor(
    private readonly dir: string,
    private readonly capBytes: number,
  ) {}

  /**
   * A spool in `dir` holding at most `capBytes` at once, or undefined where there is none to have: no bytes, no such
   * folder, or no per-descriptor paths for the engine's thread to open the files by.
   */
  static at(dir: string, capBytes: number): ReceiveSpool | undefined {
    if (capBytes <= 0 || !existsSync(dir) || pinPath(0) === undefined) return undefined;
    return new ReceiveSpool(dir, capBytes);
  }

  /** A new file for one object's blocks; undefined while writes are paused or it cannot be made. */
  open(): SpoolFile | undefined {
    if (performance.now() < this.pausedUntil) return undefined;
    const path = join(this.dir, `kdn-spool-${randomUUID()}`);
    let fd: number;
    try {
      fd = openSync(path, 'wx+', 0o600);
    } catch {
      this.failed();
      return undefined;
    }
    try {
      unlinkSync(path);
      // Its device and inode: appends move its size and modification time while earlier blocks are read.
      return new SpoolFile(this, fd, path, appendedFileIdentity(fstatSync(fd)));
    } catch {
      closeSync(fd);
      this.failed();
      return undefined;
    }
  }

  /** Whether `bytes` more fit under the bound; if so they are counted as held. */
  reserve(bytes: number): boolean {
    if (this.held + bytes > this.capBytes) return false;
    this.held += bytes;
    return true;
  }

  free(bytes: number): void {
    this.held -= bytes;
  }

  /** `bytes` went with their bytes: past the bound, or with no file to write them to. */
  sent(bytes: number): void {
    this.stats.sentBytes += bytes;
  }

  /** A file or a write failed: no files are tried for a while. */
  failed(): void {
    this.stats.failures++;
    this.pausedUntil = performance.now() + PAUSE_MS;
  }
}

/** One object's spool file: blocks appended one after another, each then readable by its KVBlockSource. */
export class SpoolFile {
  private end = 0;
  private broken = false;
  private closed = false;
  /** The path the engine's thread opens it by (block-source.ts pinPath). */
  private readonly pin: string | undefined;

  constructor(
    private readonly spool: ReceiveSpool,
    private readonly fd: number,
    private readonly path: string,
    private readonly identity: string,
  ) {
    this.pin = pinPath(fd);
  }

  /**
   * Appends `bytes` and says where they lie; undefined when they must go with their bytes instead (the caller counts
   * those: ReceiveSpool.sent).
   */
  write(bytes: Uint8Array): KVBlockSource | undefined {
    if (this.broken || this.closed || !this.spool.reserve(bytes.length)) return undefined;
    const position = this.end;
    try {
      for (let done = 0; done < bytes.length; ) done += writeSync(this.fd, bytes, done, bytes.length - done, position + done);
    } catch {
      // Most likely the folder is full: this object's later blocks, and others' for a while, go with their bytes.
      this.spool.free(bytes.length);
      this.broken = true;
      this.spool.failed();
      return undefined;
    }
    this.end += bytes.length;
    this.spool.stats.spooledBytes += bytes.length;
    return { path: this.path, pin: this.pin, identity: this.identity, position, length: bytes.length };
  }

  /** Closes the file (the engine's thread is done with its blocks); its bytes no longer count against the bound. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    closeSync(this.fd);
    this.spool.free(this.end);
  }
}
