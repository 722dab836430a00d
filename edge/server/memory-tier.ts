import { LRUCache } from 'lru-cache';
import type { CachedObject } from './cached-object.ts';
import type { MirroredFile, ShmMirror } from './shm-mirror.ts';

/**
 * A memory-tier object: its bytes in this process (`body`), or, once its shared-memory file is written, in that
 * file alone (`file`), so that the mirror does not hold every object in memory twice.
 */
export interface MemoryObject {
  readonly etag: string;
  readonly size: number;
  readonly body: Buffer | null;
  readonly file: MirroredFile | null;
}

class Entry implements MemoryObject {
  file: MirroredFile | null = null;

  constructor(
    readonly etag: string,
    public body: Buffer | null,
    readonly size: number,
  ) {}
}

/**
 * The memory tier: verified objects in an LRU bounded by their total bytes. A budget of 0 disables it. With a
 * mirror, every object it keeps is also a file in shared memory, removed when the object leaves the tier; once that
 * file is written the object's bytes are dropped from this process and served from the file (tmpfs is memory too).
 */
export class MemoryTier {
  readonly budgetBytes: number;
  evictions = 0;
  /** Bytes of the tier's objects held in this process; the rest lie only in their shared-memory files. */
  heapBytes = 0;
  private readonly cache: LRUCache<string, Entry> | null;

  constructor(
    budgetBytes: number,
    private readonly mirror?: ShmMirror,
  ) {
    this.budgetBytes = budgetBytes;
    this.cache =
      budgetBytes > 0
        ? new LRUCache<string, Entry>({
            maxSize: budgetBytes,
            sizeCalculation: (entry) => Math.max(1, entry.size),
            dispose: (entry, key, reason) => {
              if (reason === 'evict') this.evictions += 1;
              if (entry.body !== null) this.heapBytes -= entry.size;
              // A replacement ('set') is followed by the new object's own put, queued after this removal.
              this.mirror?.remove(key);
            },
          })
        : null;
  }

  get(key: string): MemoryObject | undefined {
    return this.cache?.get(key);
  }

  /**
   * Objects larger than the whole budget are not kept (lru-cache refuses them). The same object again (equal ETags:
   * the ETag covers every byte) only counts as a use.
   */
  set(key: string, object: CachedObject): void {
    if (!this.cache) return;
    if (this.cache.peek(key)?.etag === object.etag) {
      this.cache.get(key);
      return;
    }
    const entry = new Entry(object.etag, object.body, object.body.length);
    this.cache.set(key, entry);
    if (this.cache.peek(key) !== entry) return;
    this.heapBytes += entry.size;
    void this.mirror?.put(key, object.body).then((file) => {
      // Dropped only while this is still the key's object: a later one has its own put, queued after this.
      if (file === null || this.cache!.peek(key) !== entry) return;
      entry.file = file;
      entry.body = null;
      this.heapBytes -= entry.size;
    });
  }

  /** Presence without counting as a use (lru-cache's has() leaves recency alone). */
  has(key: string): boolean {
    return this.cache?.has(key) ?? false;
  }

  delete(key: string): boolean {
    return this.cache?.delete(key) ?? false;
  }

  /**
   * Drops `object` if it is still `key`'s: its file is gone or was replaced by something the tier did not write (its
   * identity differs), so nothing here holds its bytes any more. Its removal takes the foreign file with it.
   */
  forget(key: string, object: MemoryObject): void {
    if (this.cache?.peek(key) === object) this.cache.delete(key);
  }

  get objects(): number {
    return this.cache?.size ?? 0;
  }

  get bytes(): number {
    return this.cache?.calculatedSize ?? 0;
  }
}
