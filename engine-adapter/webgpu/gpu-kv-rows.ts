/**
 * Saved cache rows of the WebGPU backend, kept in device memory so that a chunk seen again is placed by GPU copies
 * (and one re-rotation dispatch per layer when it lands at another position) with nothing crossing the bus.
 */
import { KdnError } from '../../common/errors.ts';
import type { KVRows } from '../backend.ts';
import { withErrorScopes } from './device.ts';
import type { GpuContext } from './gpu-context.ts';
import type { GpuKVCache } from './gpu-kv-cache.ts';
import type { KvInjector } from './kv-injector.ts';
import type { LayerWrite } from './kv-layer-expander.ts';
import { recordRerotate } from './kernels/rerotate.ts';

export class GpuKVRows implements KVRows {
  readonly bytes: number;
  private disposed = false;

  private constructor(
    readonly tokens: number,
    readonly position: number,
    private readonly keys: GPUBuffer[],
    private readonly values: GPUBuffer[],
    /** Runs `release` once recorded work that may still read these buffers is submitted. */
    private readonly whenSubmitted: (release: () => void) => void,
  ) {
    this.bytes = [...keys, ...values].reduce((n, b) => n + b.size, 0);
  }

  /**
   * Copies rows [start, end) of every layer of `cache` once the writes already staged for it have landed. The buffers'
   * allocation is checked in its own error scopes (an out-of-memory device refuses them here).
   */
  static async save(ctx: GpuContext, injector: KvInjector<LayerWrite>, cache: GpuKVCache, start: number, end: number): Promise<GpuKVRows> {
    const stride = cache.tokenStride * 4;
    const bytes = (end - start) * stride;
    const keys: GPUBuffer[] = [];
    const values: GPUBuffer[] = [];
    try {
      await withErrorScopes(ctx.device, 'saving KV rows', () => {
        const rec = injector.recorder();
        cache.reserve(end, () => rec);
        for (let l = 0; l < cache.layers; l++) {
          keys.push(ctx.storage(bytes, `saved layer ${l} keys`));
          values.push(ctx.storage(bytes, `saved layer ${l} values`));
          rec.copy(cache.keys[l]!.buffer, cache.keys[l]!.offset + start * stride, keys[l]!, 0, bytes);
          rec.copy(cache.values[l]!.buffer, cache.values[l]!.offset + start * stride, values[l]!, 0, bytes);
        }
      });
      // Submits the copies and reports a device error in them, before the rows count as kept.
      await injector.settle();
    } catch (err) {
      for (const b of [...keys, ...values]) b.destroy();
      throw err;
    }
    return new GpuKVRows(end - start, start, keys, values, (release) => injector.whenSubmitted(release));
  }

  /**
   * Records the copy into `cache` at `position` (and the keys' turn by the distance from where they were saved) into
   * the injector's batch, which the next settle or forward submits and checks.
   */
  load(
    ctx: GpuContext,
    injector: KvInjector<LayerWrite>,
    invFreq: GPUBuffer,
    cache: GpuKVCache,
    position: number,
    shape: { kvHeads: number; headDim: number },
  ): void {
    if (this.disposed) throw new KdnError('INTERNAL', 'saved KV rows were used after their disposal');
    cache.reserve(position + this.tokens, () => injector.recorder());
    const rec = injector.recorder();
    const stride = cache.tokenStride * 4;
    const bytes = this.tokens * stride;
    const delta = position - this.position;
    for (let l = 0; l < cache.layers; l++) {
      rec.copy(this.keys[l]!, 0, cache.keys[l]!.buffer, cache.keys[l]!.offset + position * stride, bytes);
      rec.copy(this.values[l]!, 0, cache.values[l]!.buffer, cache.values[l]!.offset + position * stride, bytes);
      if (delta !== 0) {
        const jobs = [{ start: position, mode: { kind: 'delta', delta } as const }];
        recordRerotate(ctx, rec, { cache: cache.keys[l]!, invFreq, tokens: this.tokens, ...shape, jobs });
      }
    }
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    // Submitted work that reads a destroyed buffer still completes; recorded but unsubmitted work would fail.
    this.whenSubmitted(() => {
      for (const b of [...this.keys, ...this.values]) b.destroy();
    });
  }
}
