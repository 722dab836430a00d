/**
 * Keeps the KV cache buffers of disposed sessions for the next ones: creating a large session's cache (64 buffers
 * of tens of MB for an 8B model at 8k tokens) costs device allocations on every query otherwise, about 55 ms on the
 * H100. Queries size their sessions by context and answer length, so caches allocate in size classes (sizeClass)
 * and a full pool makes room for the latest buffers by dropping the longest-unused ones.
 *
 * A reused buffer holds another session's rows; that is safe because every read of a cache is bounded by positions
 * its own session wrote (attention by causality, export by the session's length).
 */
import { storageSize, type GpuContext } from './gpu-context.ts';

/** Token counts caches allocate: 256, then steps of 1/8 of the enclosing power of two (at most 12.5% over). */
export function sizeClass(tokens: number): number {
  if (tokens <= 256) return 256;
  const step = 2 ** Math.floor(Math.log2(tokens - 1)) / 8;
  return Math.ceil(tokens / step) * step;
}

export class KvBufferPool {
  /** Free buffers, longest unused first. */
  private free: GPUBuffer[] = [];
  private pooledBytes = 0;
  /** Pooled bytes kept at most: the largest cache seen, so one such session's worth waits for the next. */
  private capBytes = 0;

  constructor(private readonly ctx: GpuContext) {}

  /** Notes a cache of `bytes` in all, which raises what the pool keeps. */
  expect(bytes: number): void {
    this.capBytes = Math.max(this.capBytes, bytes);
  }

  /** A storage buffer of `bytes` (rounded by storageSize), the most recently returned one of that size if any. */
  take(bytes: number, label: string): GPUBuffer {
    const size = storageSize(bytes);
    const at = this.free.findLastIndex((b) => b.size === size);
    if (at === -1) return this.ctx.storage(bytes, label);
    const [buffer] = this.free.splice(at, 1);
    this.pooledBytes -= size;
    return buffer!;
  }

  /** Returns a buffer the caller no longer uses (its submitted work may still run: later work queues behind it). */
  give(buffer: GPUBuffer): void {
    while (this.pooledBytes + buffer.size > this.capBytes && this.free.length > 0) {
      const dropped = this.free.shift()!;
      this.pooledBytes -= dropped.size;
      dropped.destroy();
    }
    if (this.pooledBytes + buffer.size > this.capBytes) {
      buffer.destroy();
      return;
    }
    this.free.push(buffer);
    this.pooledBytes += buffer.size;
  }

  destroy(): void {
    for (const b of this.free) b.destroy();
    this.free = [];
    this.pooledBytes = 0;
  }
}
