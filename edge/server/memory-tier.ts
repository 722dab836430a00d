import { LRUCache } from 'lru-cache';
import type { CachedObject } from './cached-object.ts';

/** The memory tier: verified objects in an LRU bounded by their total bytes. A budget of 0 disables it. */
export class MemoryTier {
  readonly budgetBytes: number;
  evictions = 0;
  private readonly cache: LRUCache<string, CachedObject> | null;

  constructor(budgetBytes: number) {
    this.budgetBytes = budgetBytes;
    this.cache = budgetBytes > 0
      ? new LRUCache<string, CachedObject>({
        maxSize: budgetBytes,
        sizeCalculation: (object) => Math.max(1, object.body.length),
        dispose: (_value, _key, reason) => {
          if (reason === 'evict') this.evictions += 1;
        },
      })
      : null;
  }

  get(key: string): CachedObject | undefined {
    return this.cache?.get(key);
  }

  /** Objects larger than the whole budget are not kept (lru-cache refuses them). */
  set(key: string, object: CachedObject): void {
    this.cache?.set(key, object);
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
