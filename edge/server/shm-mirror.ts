import { randomBytes } from 'node:crypto';
import { readlinkSync } from 'node:fs';
import { chmod, mkdtemp, readdir, readFile, rename, rm, stat, unlink, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { KdnError } from '../../common/errors.ts';
import type { Logger } from '../../common/log.ts';
import { fileIdentity } from '../../storage/kv-object/index.ts';
import { SHM_IDENTITY_FILE, shmObjectName, type ShmInfo } from '../protocol.ts';

const FOLDER_PREFIX = 'kdn-edge-';
/**
 * Who owns a folder ({pid, pidNamespace} as JSON), so a later edge can remove what a killed one left in memory. Its
 * owner renews its mtime: a pid says nothing across PID namespaces (edges in containers sharing a tmpfs volume, or
 * an edge's container restarted while another still mounts it), so a folder whose owner stopped renewing is gone too.
 */
const OWNER_FILE = 'pid';

/** How often a mirror renews its owner file and looks for orphans, and after how long without renewal a folder is one. */
export interface ShmLease {
  renewMs: number;
  expireMs: number;
}

const LEASE: ShmLease = { renewMs: 10_000, expireMs: 60_000 };

/** This process's PID namespace (e.g. "pid:[4026531836]"); null where /proc does not say. */
const PID_NAMESPACE: string | null = (() => {
  try {
    return readlinkSync('/proc/self/ns/pid');
  } catch {
    return null;
  }
})();

/** A memory-tier object's file in the mirror: its path, and the file's identity (block-source.ts fileIdentity). */
export interface MirroredFile {
  path: string;
  identity: string;
}

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
  private readonly renewal: NodeJS.Timeout;
  private renewing: Promise<void> = Promise.resolve();

  private constructor(
    private readonly parent: string,
    readonly dir: string,
    readonly instance: string,
    private readonly log: Logger,
    private readonly lease: ShmLease,
  ) {
    this.renewal = setInterval(() => {
      this.renewing = this.renew();
    }, lease.renewMs);
    this.renewal.unref();
  }

  /** Creates a fresh private directory under `parent` (e.g. /dev/shm) with its identity and owner files. */
  static async open(parent: string, log: Logger, lease: ShmLease = LEASE): Promise<ShmMirror> {
    let dir: string;
    try {
      await removeOrphans(parent, lease, log);
      dir = await mkdtemp(join(parent, FOLDER_PREFIX));
      await chmod(dir, 0o700);
    } catch (err) {
      throw new KdnError('INVALID_ARGUMENT', `cannot create a shared-memory directory under ${parent}: ${(err as Error).message}`, {
        hint: 'pass --shm-dir a writable tmpfs directory (e.g. /dev/shm), or leave it out to serve over sockets only',
        cause: err,
      });
    }
    const instance = randomBytes(16).toString('hex');
    const owner: Owner = { pid: process.pid, pidNamespace: PID_NAMESPACE };
    await writeFile(join(dir, OWNER_FILE), JSON.stringify(owner), { mode: 0o600 });
    await writeFile(join(dir, SHM_IDENTITY_FILE), instance, { mode: 0o600 });
    return new ShmMirror(parent, dir, instance, log, lease);
  }

  get info(): ShmInfo {
    return { dir: this.dir, instance: this.instance };
  }

  /**
   * Keeps `body` as the file of `key`. Resolves with the file once it is in place, or null: a failure is logged and
   * counted (kdn then reads the key over HTTP), and a closed mirror writes nothing.
   */
  put(key: string, body: Buffer): Promise<MirroredFile | null> {
    let written: MirroredFile | null = null;
    const done = this.enqueue(key, async () => {
      const file = join(this.dir, shmObjectName(key));
      const temp = `${file}.${process.pid}.${this.tempSeq++}.tmp`;
      try {
        await writeFile(temp, body, { mode: 0o600 });
        const identity = fileIdentity(await stat(temp));
        await rename(temp, file);
        this.counters.writes += 1;
        written = { path: file, identity };
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
    return done.then(() => written);
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
    clearInterval(this.renewal);
    await this.renewing;
    await this.settled();
    await rm(this.dir, { recursive: true, force: true });
  }

  /** Renews this folder's lease, then removes orphans (an edge killed since this one started leaves one). */
  private async renew(): Promise<void> {
    if (this.closed) return;
    const now = new Date();
    try {
      await utimes(join(this.dir, OWNER_FILE), now, now);
    } catch (err) {
      // Another edge took the folder for an orphan: this process stalled past the lease. Its keys go over HTTP.
      this.log.warn({ dir: this.dir, err: (err as Error).message }, 'edge shared-memory folder lease could not be renewed');
    }
    await removeOrphans(this.parent, this.lease, this.log, this.dir);
  }

  /** Runs `op` after the operations queued on `key` before it; resolves once it ran (at once when closed). */
  private enqueue(key: string, op: () => Promise<void>): Promise<void> {
    if (this.closed) return Promise.resolve();
    const next = (this.chains.get(key) ?? Promise.resolve()).then(op).catch((err: unknown) => {
      this.log.warn({ key, err: (err as Error).message }, 'edge shared-memory update failed');
    });
    this.chains.set(key, next);
    void next.finally(() => {
      if (this.chains.get(key) === next) this.chains.delete(key);
    });
    return next;
  }
}

const ownerSchema = z.object({ pid: z.number().int().positive(), pidNamespace: z.string().nullable() });
type Owner = z.infer<typeof ownerSchema>;

/**
 * Removes the folders of edges that died without closing (killed): tmpfs is memory, and nothing else would free it.
 * A folder is an orphan when its owner is a process of this PID namespace that no longer exists, or when its lease
 * lapsed (its owner file, or the folder itself where the owner never wrote one, unchanged for `lease.expireMs`).
 */
async function removeOrphans(parent: string, lease: ShmLease, log: Logger, own?: string): Promise<void> {
  for (const name of await readdir(parent).catch(() => [] as string[])) {
    if (!name.startsWith(FOLDER_PREFIX)) continue;
    const folder = join(parent, name);
    if (folder === own) continue;
    const owner = await readOwner(folder);
    const renewed = await stat(join(folder, OWNER_FILE))
      .catch(() => stat(folder))
      .catch(() => null);
    if (renewed === null) continue;
    const lapsed = Date.now() - renewed.mtimeMs > lease.expireMs;
    const gone = owner !== null && owner.pidNamespace === PID_NAMESPACE && !alive(owner.pid);
    if (!lapsed && !gone) continue;
    await rm(folder, { recursive: true, force: true }).catch(() => undefined);
    log.info({ folder, pid: owner?.pid, lapsed }, 'removed the shared-memory folder of an edge that is gone');
  }
}

/** A folder's owner; a bare pid (as earlier versions wrote it) is one of this namespace. Null: none or unreadable. */
async function readOwner(folder: string): Promise<Owner | null> {
  const text = await readFile(join(folder, OWNER_FILE), 'utf8').catch(() => null);
  if (text === null) return null;
  if (/^\d+$/.test(text)) return { pid: Number(text), pidNamespace: PID_NAMESPACE };
  try {
    return ownerSchema.safeParse(JSON.parse(text)).data ?? null;
  } catch {
    return null;
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
