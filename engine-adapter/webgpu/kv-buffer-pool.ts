/**
 * Keeps the KV cache buffers of disposed sessions for the next ones: creating a large session's cache (64 buffers
 * of tens of MB for an 8B model at 8k tokens) costs device allocations on every query otherwise. A reused buffer
 * holds another session's rows; that is safe because every read of a cache is bounded by positions its own
 * session wrote (attention by causality, export by the session's length).
 */
import { storageSize, type GpuContext } from './gpu-context.ts';

export class KvBufferPool {
  private readonly free = new Map<number, GPUBuffer[]>();
  private pooledBytes = 0;
  /** Pooled bytes kept at most: the largest cache seen, so one such session's worth waits for the next. */
  private capBytes = 0;

  constructor(private readonly ctx: GpuContext) {}

  /** Notes a cache of `bytes` in all, which raises what the pool keeps. */
  expect(bytes: number): void {
    this.capBytes = Math.max(this.capBytes, bytes);
  }

  /** A storage buffer of `bytes` (rounded by storageSize), a pooled one if one of that size is free. */
  take(bytes: number, label: string): GPUBuffer {
    const size = storageSize(bytes);
    const list = this.free.get(size);
    const buffer = list?.pop();
    if (buffer) {
      this.pooledBytes -= size;
      return buffer;
    }
    return this.ctx.storage(bytes, label);
  }

  /** Returns a buffer the caller no longer uses (its submitted work may still run: later work queues behind it). */
  give(buffer: GPUBuffer): void {
    if (this.pooledBytes + buffer.size > this.capBytes) {
      buffer.destroy();
      return;
    }
    const list = this.free.get(buffer.size) ?? [];
    list.push(buffer);
    this.free.set(buffer.size, list);
    this.pooledBytes += buffer.size;
  }

  destroy(): void {
    for (const list of this.free.values()) for (const b of list) b.destroy();
    this.free.clear();
    this.pooledBytes = 0;
  }
}

