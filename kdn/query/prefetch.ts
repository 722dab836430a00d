import type { KVLayerBlock, KVObjectReader } from '../../storage/kv-object/types.ts';

export type PrefetchedReader = KVObjectReader & { drained: Promise<void> };

/**
 * Verified layer blocks held in arrival order until the injector takes them, fed by a stream (prefetchLayers) or by
 * a fetch worker's messages (kv-fetch-pool.ts). `layers()` yields each block as soon as it is in and raises a failure
 * at the layer where it happened; blocks it yielded are released.
 */
export class LayerQueue {
  private readonly blocks: (KVLayerBlock | undefined)[] = [];
  private failure: { error: unknown } | undefined;
  private finished = false;
  private wake: (() => void) | undefined;
  private markDrained!: () => void;
  /** Resolves once the last layer arrived or the stream failed; never rejects. */
  readonly drained = new Promise<void>((resolve) => (this.markDrained = resolve));

  get done(): boolean {
    return this.finished;
  }

  push(block: KVLayerBlock): void {
    this.blocks.push(block);
    this.signal();
  }

  end(): void {
    this.finished = true;
    this.markDrained();
    this.signal();
  }

  fail(error: unknown): void {
    this.failure = { error };
    this.end();
  }

  async *layers(): AsyncGenerator<KVLayerBlock> {
    let next = 0;
    for (;;) {
      if (next < this.blocks.length) {
        const block = this.blocks[next]!;
        this.blocks[next++] = undefined; // injected layers need not stay in memory
        yield block;
        continue;
      }
      if (this.failure) throw this.failure.error;
      if (this.finished) return;
      await new Promise<void>((resolve) => (this.wake = resolve));
    }
  }

  private signal(): void {
    this.wake?.();
    this.wake = undefined;
  }
}

/**
 * Drains a KV object reader's layers into memory as they arrive, so all of a query's objects download in parallel
 * while the engine injects them one at a time in context order. The returned reader yields the same verified
 * layers, each as soon as it is in; a stream error is raised at the layer where it happened.
 */
export function prefetchLayers(reader: KVObjectReader): PrefetchedReader {
  const queue = new LayerQueue();
  void (async () => {
    try {
      for await (const block of reader.layers) queue.push(block);
      queue.end();
    } catch (error) {
      queue.fail(error);
    }
  })();
  return { header: reader.header, layers: queue.layers(), drained: queue.drained };
}
