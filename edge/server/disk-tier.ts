import { createHash, randomBytes } from 'node:crypto';
import { mkdir, readdir, readFile, rename, rm, stat, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { KdnError, isKdnError } from '../../common/errors.ts';
import { verifyKVObject } from '../../storage/kv-object/index.ts';
import { etagFor, type CachedObject } from './cached-object.ts';

/** Cached KV says much about the text it came from: the edge's files are its owner's alone. */
const FILE_MODE = 0o600;
const DIR_MODE = 0o700;

/**
 * The disk tier: one file per object under `<dir>/objects/<hh>/<sha256(key)>`, bounded by total bytes with LRU
 * eviction. Files are named by the key's hash because keys can be longer than a file name and "a" and "a/b" could
 * not both be files; lookups only ever go from key to hash, so the index is rebuilt from the directory alone.
 *
 * Writes go to `<dir>/tmp/` and are renamed into place, so readers see a whole file or none. No fsync: a file torn
 * by a power loss fails verification on read and is dropped and refetched like any other corrupt file. Every read
 * is verified with verifyKVObject for the same reason (and for bit rot). Recency across restarts is approximated by
 * file modification time.
 */
export class DiskTier {
  readonly dir: string;
  readonly budgetBytes: number;
  evictions = 0;
  corruptDropped = 0;
  /** hash -> size, in least- to most-recently-used order (a Map keeps insertion order). */
  private readonly index = new Map<string, number>();
  private totalBytes = 0;

  private constructor(dir: string, budgetBytes: number) {
    this.dir = dir;
    this.budgetBytes = budgetBytes;
  }

  /** Opens (creating if needed) the tier at `dir`, taking its lock and rebuilding the index from the files. */
  static async open(dir: string, budgetBytes: number): Promise<DiskTier> {
    const tier = new DiskTier(dir, budgetBytes);
    if (budgetBytes > 0) await tier.load();
    return tier;
  }

  private get enabled(): boolean {
    return this.budgetBytes > 0;
  }

  private async load(): Promise<void> {
    await mkdir(join(this.dir, 'objects'), { recursive: true, mode: DIR_MODE });
    await takeLock(join(this.dir, '.lock'));
    // Temp files are writes a crash interrupted; they were never visible, so they can go.
    await rm(join(this.dir, 'tmp'), { recursive: true, force: true });
    await mkdir(join(this.dir, 'tmp'), { recursive: true, mode: DIR_MODE });
    const found: { hash: string; size: number; mtimeMs: number }[] = [];
    for (const shard of await readdir(join(this.dir, 'objects'))) {
      const shardDir = join(this.dir, 'objects', shard);
      const names = await readdir(shardDir).catch(() => [] as string[]);
      for (const name of names) {
        if (!/^[0-9a-f]{64}$/.test(name) || name.slice(0, 2) !== shard) continue;
        const info = await stat(join(shardDir, name)).catch(() => null);
        if (info?.isFile()) found.push({ hash: name, size: info.size, mtimeMs: info.mtimeMs });
      }
    }
    found.sort((a, b) => a.mtimeMs - b.mtimeMs);
    for (const { hash, size } of found) this.remember(hash, size);
    await this.evictOverBudget();
  }

  /** Whether the index holds `key` (no read, no verification). */
  has(key: string): boolean {
    return this.enabled && this.index.has(hashKey(key));
  }

  /** The verified object, or undefined on a miss. A file that fails verification is deleted and reads as a miss. */
  async read(key: string): Promise<CachedObject | undefined> {
    if (!this.enabled) return undefined;
    const hash = hashKey(key);
    const size = this.index.get(hash);
    if (size === undefined) return undefined;
    let body: Buffer;
    try {
      body = await readFile(this.pathOf(hash));
    } catch {
      // Evicted or deleted between the index lookup and the open.
      this.forget(hash);
      return undefined;
    }
    try {
      const header = verifyKVObject(body);
      this.touch(hash, size);
      return { body, etag: etagFor(header) };
    } catch (err) {
      if (!isKdnError(err)) throw err;
      this.corruptDropped += 1;
      await this.remove(hash);
      return undefined;
    }
  }

  /** Stores a verified object atomically; objects larger than the whole budget are not kept. */
  async write(key: string, body: Uint8Array): Promise<void> {
    if (!this.enabled || body.length > this.budgetBytes) return;
    const hash = hashKey(key);
    const temp = join(this.dir, 'tmp', `${hash}.${randomBytes(6).toString('hex')}`);
    const target = this.pathOf(hash);
    try {
      await writeFile(temp, body, { mode: FILE_MODE });
      await mkdir(join(this.dir, 'objects', hash.slice(0, 2)), { recursive: true, mode: DIR_MODE });
      await rename(temp, target);
    } catch (err) {
      await unlink(temp).catch(() => undefined);
      throw new KdnError('STORAGE_ERROR', `edge disk tier could not write ${key}: ${(err as Error).message}`, {
        hint: `check free space and permissions of ${this.dir}`,
        cause: err,
      });
    }
    this.forget(hash);
    this.remember(hash, body.length);
    await this.evictOverBudget();
  }

  async delete(key: string): Promise<boolean> {
    if (!this.enabled) return false;
    const hash = hashKey(key);
    const known = this.index.has(hash);
    await this.remove(hash);
    return known;
  }

  get objects(): number {
    return this.index.size;
  }

  get bytes(): number {
    return this.totalBytes;
  }

  async close(): Promise<void> {
    if (this.enabled) await unlink(join(this.dir, '.lock')).catch(() => undefined);
  }

  private pathOf(hash: string): string {
    return join(this.dir, 'objects', hash.slice(0, 2), hash);
  }

  private remember(hash: string, size: number): void {
    this.index.set(hash, size);
    this.totalBytes += size;
  }

  private forget(hash: string): void {
    const size = this.index.get(hash);
    if (size === undefined) return;
    this.index.delete(hash);
    this.totalBytes -= size;
  }

  private touch(hash: string, size: number): void {
    if (!this.index.has(hash)) return;
    this.index.delete(hash);
    this.index.set(hash, size);
  }

  private async remove(hash: string): Promise<void> {
    this.forget(hash);
    await unlink(this.pathOf(hash)).catch(() => undefined);
  }

  private async evictOverBudget(): Promise<void> {
    while (this.totalBytes > this.budgetBytes) {
      const oldest = this.index.keys().next();
      if (oldest.done) return;
      this.evictions += 1;
      await this.remove(oldest.value);
    }
  }
}

function hashKey(key: string): string {
  return createHash('sha256').update(key).digest('hex');
}

/** One edge per disk path: two edges evicting each other's files would corrupt both indexes. */
async function takeLock(path: string): Promise<void> {
  for (let attempt = 0; attempt < 2; attempt += 1) {
    try {
      await writeFile(path, String(process.pid), { flag: 'wx' });
      return;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    const owner = Number((await readFile(path, 'utf8').catch(() => '')).trim());
    if (Number.isInteger(owner) && owner > 0 && isAlive(owner)) {
      throw new KdnError('CONFLICT', `edge disk path is in use by process ${owner} (${path})`, {
        hint: 'give each edge its own --disk-path, or delete the lock file if that process is not an edge',
      });
    }
    await unlink(path).catch(() => undefined);
  }
  throw new KdnError('CONFLICT', `could not take the edge disk lock ${path}`, { hint: 'another edge is starting on the same --disk-path' });
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}
