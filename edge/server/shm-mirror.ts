import { randomBytes } from 'node:crypto';
import { chmod, mkdtemp, readdir, readFile, rename, rm, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { KdnError } from '../../common/errors.ts';
import type { Logger } from '../../common/log.ts';
import { SHM_IDENTITY_FILE, shmObjectName, type ShmInfo } from '../protocol.ts';

const FOLDER_PREFIX = 'kdn-edge-';
/** The id of the process that owns a folder, so a later edge can remove what a killed one left in memory. */
const OWNER_FILE = 'pid';

export interface ShmCounters {
  writes: number;
  removes: number;
  writeErrors: number;
}

/**
 * A copy of the memory tier's objects as files in a private tmpfs directory (edge/protocol.ts ShmInfo), so kdn on
 * the same host reads them without a socket. The memory tier stays the authority: it decides what is kept and for
 * how long, and tells the mirror. Files appear by rename of a complete temp file, so a reader never sees half an
 * object; operations on one key run in order (a removal queued after a write removes what the write left).
 */
export class ShmMirror {
  readonly counters: ShmCounters = { writes: 0, removes: 0, writeErrors: 0 };
  private readonly chains = new Map<string, Promise<void>>();
  private closed = false;
  private tempSeq = 0;

  private constructor(
    readonly dir: string,
    readonly instance: string,
    private readonly log: Logger,
  ) {}

  /** Creates a fresh private directory under `parent` (e.g. /dev/shm) with its identity file. */
  static async open(parent: string, log: Logger): Promise<ShmMirror> {
    let dir: string;
    try {
      await removeOrphans(parent, log);
      dir = await mkdtemp(join(parent, FOLDER_PREFIX));
      await chmod(dir, 0o700);
    } catch (err) {
      throw new KdnError('INVALID_ARGUMENT', `cannot create a shared-memory directory under ${parent}: ${(err as Error).message}`, {
        hint: 'pass --shm-dir a writable tmpfs directory (e.g. /dev/shm), or leave it out to serve over sockets only',
        cause: err,
      });
    }
    const instance = randomBytes(16).toString('hex');
    await writeFile(join(dir, OWNER_FILE), String(process.pid), { mode: 0o600 });
    await writeFile(join(dir, SHM_IDENTITY_FILE), instance, { mode: 0o600 });
    return new ShmMirror(dir, instance, log);
  }

  get info(): ShmInfo {
    return { dir: this.dir, instance: this.instance };
  }

  /** Keeps `body` as the file of `key`; a failure is logged and counted (kdn then reads the key over HTTP). */
  put(key: string, body: Buffer): void {
    this.enqueue(key, async () => {
      const file = join(this.dir, shmObjectName(key));
      const temp = `${file}.${process.pid}.${this.tempSeq++}.tmp`;
      try {
        await writeFile(temp, body, { mode: 0o600 });
        await rename(temp, file);
        this.counters.writes += 1;
      } catch (err) {
        this.counters.writeErrors += 1;
        // A full tmpfs (a container's 64 MiB /dev/shm) fails every write: say so once, then count.
        if (this.counters.writeErrors === 1) {
          const message = 'edge shared-memory write failed; such keys go over HTTP (later failures are only counted in /stats)';
          this.log.warn({ key, dir: this.dir, err: (err as Error).message }, message);
        }
        await rm(temp, { force: true });
      }
    });
  }

  remove(key: string): void {
    this.enqueue(key, async () => {
      try {
        await unlink(join(this.dir, shmObjectName(key)));
        this.counters.removes += 1;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
        this.log.warn({ key, err: (err as Error).message }, 'edge shared-memory removal failed');
      }
    });
  }

  /** Waits for queued writes and removals (tests, shutdown). */
  async settled(): Promise<void> {
    while (this.chains.size > 0) await Promise.all(this.chains.values());
  }

  /** Removes the directory with everything in it; later puts are ignored. */
  async close(): Promise<void> {
    this.closed = true;
    await this.settled();
    await rm(this.dir, { recursive: true, force: true });
  }

  private enqueue(key: string, op: () => Promise<void>): void {
    if (this.closed) return;
    const next = (this.chains.get(key) ?? Promise.resolve()).then(op).catch((err: unknown) => {
      this.log.warn({ key, err: (err as Error).message }, 'edge shared-memory update failed');
    });
    this.chains.set(key, next);
    void next.finally(() => {
      if (this.chains.get(key) === next) this.chains.delete(key);
    });
  }
}

/**
 * Removes the folders of edges that died without closing (killed): tmpfs is memory, and nothing else would free it.
 * A folder is left alone unless its owner file names a process that no longer exists.
 */
async function removeOrphans(parent: string, log: Logger): Promise<void> {
  for (const name of await readdir(parent).catch(() => [] as string[])) {
    if (!name.startsWith(FOLDER_PREFIX)) continue;
    const folder = join(parent, name);
    const pid = Number(await readFile(join(folder, OWNER_FILE), 'utf8').catch(() => ''));
    if (!Number.isInteger(pid) || pid <= 0 || alive(pid)) continue;
    await rm(folder, { recursive: true, force: true }).catch(() => undefined);
    log.info({ folder, pid }, 'removed the shared-memory folder of an edge that is gone');
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    // EPERM: the process exists but belongs to another user.
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}
