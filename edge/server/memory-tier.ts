import { LRUCache } from 'lru-cache';
import type { CachedObject } from './cached-object.ts';
import type { ShmMirror } from './shm-mirror.ts';

/**
 * The memory tier: verified objects in an LRU bounded by their total bytes. A budget of 0 disables it. With a
 * mirror, every object it keeps is also a file in shared memory, removed when the object leaves the tier.
 */
export class MemoryTier {
  readonly budgetBytes: number;
  evictions = 0;
  private readonly cache: LRUCache<string, CachedObject> | null;

  constructor(
    budgetBytes: number,
    private readonly mirror?: ShmMirror,
  ) {
    this.budgetBytes = budgetBytes;
    this.cache =
      budgetBytes > 0
        ? new LRUCache<string, CachedObject>({
            maxSize: budgetBytes,
            sizeCalculation: (object) => Math.max(1, object.body.length),
            dispose: (_value, key, reason) => {
              if (reason === 'evict') this.evictions += 1;
              // A replacement ('set') is followed by the new object's own put, queued after this removal.
              this.mirror?.remove(key);
            },
          })
        : null;
  }

  get(key: string): CachedObject | undefined {
    return this.cache?.get(key);
  }

  /** Objects larger than the whole budget are not kept (lru-cache refuses them). */
  set(key: string, object: CachedObject): void {
    if (!this.cache) return;
    const before = this.cache.peek(key);
    this.cache.set(key, object);
    if (this.mirror && before !== object && this.cache.peek(key) === object) this.mirror.put(key, object.body);
  }

  /** Presence without counting as a use (lru-cache's has() leaves recency alone). */
  has(key: string): boolean {
    return this.cache?.has(key) ?? false;
  }

  delete(key: string): boolean {
    return this.cache?.delete(key) ?? false;
  }

  get objects(): number {
    return this.cache?.size ?? 0;
  }

  get bytes(): number {
    return this.cache?.calculatedSize ?? 0;
  }
}
