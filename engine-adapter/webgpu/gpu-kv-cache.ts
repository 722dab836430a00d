/**
 * A session's KV cache on the GPU: per layer, keys and values token-major [tokens][kvHeads][headDim] in f32 (the
 * KV object layout, so a chunk is one contiguous range). Buffers grow by doubling up to `capacity` (copied on the
 * GPU), rounded to the pool's size classes, so a session with a large capacity costs memory only for about the
 * tokens it holds; a caller that knows its size reserves it at once. Each tensor is a range of one of the backend's
 * pooled blocks (kv-buffer-pool.ts), bound with its offset: kernels see it as a whole array.
 */
import { KdnError } from '../../common/errors.ts';
import type { KVCacheHandle } from '../backend.ts';
import type { BufferRange, GpuContext, Recorder } from './gpu-context.ts';
import { sizeClass, type KvBufferPool } from './kv-buffer-pool.ts';

/** What a cache needs from its backend. */
export interface KVCacheOwner {
  pool: KvBufferPool;
  /** Runs `release` once the work recorded so far, which may still write to the cache, is submitted. */
  whenSubmitted(release: () => void): void;
}

export class GpuKVCache implements KVCacheHandle {
  keys: BufferRange[] = [];
  values: BufferRange[] = [];
  private allocated = 0;
  private disposed = false;
  /** GpuKVCache.maxTokens for this cache. */
  private readonly limitTokens: number;

  /** Most tokens one layer tensor can hold on this adapter. */
  static maxTokens(ctx: GpuContext, tokenStride: number): number {
    return Math.floor(ctx.maxStorageBytes / (tokenStride * 4));
  }

  /** Throws CONTEXT_TOO_LONG unless a `capacity`-token layer tensor fits the adapter's buffer limits. */
  static checkCapacity(ctx: GpuContext, capacity: number, tokenStride: number): void {
    if (capacity > GpuKVCache.maxTokens(ctx, tokenStride)) {
      const bytes = capacity * tokenStride * 4;
      throw new KdnError(
        'CONTEXT_TOO_LONG',
        `A ${capacity}-token KV cache needs ${bytes} bytes per layer tensor, over this adapter's ${ctx.maxStorageBytes}.`,
        {
          hint: `Ask for at most ${GpuKVCache.maxTokens(ctx, tokenStride)} tokens.`,
        },
      );
    }
  }

  constructor(
    ctx: GpuContext,
    readonly capacity: number,
    readonly layers: number,
    /** kvHeads * headDim: floats per token per layer. */
    readonly tokenStride: number,
    private readonly owner: KVCacheOwner,
  ) {
    GpuKVCache.checkCapacity(ctx, capacity, tokenStride);
    this.limitTokens = GpuKVCache.maxTokens(ctx, tokenStride);
  }

  get isDisposed(): boolean {
    return this.disposed;
  }

  /**
   * Makes room for tokens [0, tokens). When buffers grow, the copy of what is held is recorded into `recorder()`,
   * asked for only then (the injector's records the expansions waiting for the old buffers first).
   */
  reserve(tokens: number, recorder: () => Recorder): void {
    if (this.disposed) throw new KdnError('INVALID_ARGUMENT', 'The KV cache was disposed.');
    if (tokens <= this.allocated) return;
    const rec = recorder();
    // In size classes, so that sessions of nearby capacities reuse each other's pooled buffers.
    const next = Math.min(sizeClass(Math.min(this.capacity, Math.max(tokens, this.allocated * 2))), this.limitTokens);
    const bytes = next * this.tokenStride * 4;
    const held = this.allocated * this.tokenStride * 4;
    const pool = this.owner.pool;
    pool.expect(2 * this.layers * bytes);
    const grow = (old: BufferRange[], kind: string): BufferRange[] =>
      Array.from({ length: this.layers }, (_, l) => {
        const previous = old[l];
        const range = pool.take(bytes, `layer ${l} ${kind}`, previous?.buffer);
        if (previous) {
          rec.copy(previous.buffer, previous.offset, range.buffer, range.offset, held);
          // Back to the pool once the copy recorded above is submitted (later users queue behind it).
          rec.afterSubmit(() => pool.give(previous));
        }
        return range;
      });
    this.keys = grow(this.keys, 'keys');
    this.values = grow(this.values, 'values');
    this.allocated = next;
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    const ranges = [...this.keys, ...this.values];
    // Later users of the ranges queue behind that work on the GPU.
    this.owner.whenSubmitted(() => {
      for (const range of ranges) this.owner.pool.give(range);
    });
    this.keys = [];
    this.values = [];
  }
}
