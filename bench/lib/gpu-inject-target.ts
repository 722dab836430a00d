/**
 * The engine's WebGPU injection without a model, for timing delivery's last steps: verified layer blocks staged in
 * mapped buffers (kv-injector.ts; those from a same-host edge's files read there on libuv's pool), copied to the GPU and expanded into an f32 KV cache (kv-layer-expander.ts), or
 * with `expand: false` staged and copied only (the expansion's share is the difference). Times the host's part (the
 * write calls: the staging copy, waits for free staging buffers) apart from the wait for the GPU at the end.
 */
import { KdnError } from '../../common/errors.ts';
import { ropeInvFreq } from '../../engine-adapter/cpu/kernels/rope.ts';
import { openDevice } from '../../engine-adapter/webgpu/device.ts';
import { GpuContext } from '../../engine-adapter/webgpu/gpu-context.ts';
import { GpuKVCache } from '../../engine-adapter/webgpu/gpu-kv-cache.ts';
import { BlockFiles } from '../../engine-adapter/webgpu/block-files.ts';
import { KvBufferPool } from '../../engine-adapter/webgpu/kv-buffer-pool.ts';
import { KvInjector, type Expander } from '../../engine-adapter/webgpu/kv-injector.ts';
import { layerExpander, type LayerWrite } from '../../engine-adapter/webgpu/kv-layer-expander.ts';
import { GpuTransformTables } from '../../engine-adapter/webgpu/gpu-transform-tables.ts';
import type { KVBlockReader } from '../../storage/kv-object/types.ts';

export interface KvShape {
  layers: number;
  kvHeads: number;
  headDim: number;
}

/** Timings of one pass of injections, in milliseconds. */
export interface GpuInjectTiming {
  /** Inside the write calls (staging copies and waits for staging buffers). */
  hostWriteMs: number;
  /** From the last write to the GPU done with every copy and expansion. */
  settleMs: number;
  /** Blocks read from their source file into staging on libuv's pool (not copied on this thread). */
  readBlocks: number;
}

export class GpuInjectTarget {
  length = 0;
  private hostWriteMs = 0;
  /** The injector's count of blocks read from files when this pass began. */
  private readBefore = 0;

  private constructor(
    private readonly ctx: GpuContext,
    private readonly cache: GpuKVCache,
    private readonly injector: KvInjector<LayerWrite>,
    private readonly buffers: GPUBuffer[],
    private readonly pool: KvBufferPool,
  ) {}

  /** A cache of `capacity` tokens for `shape` on the first adapter; `expand: false` stages and copies only. */
  static async open(shape: KvShape, capacity: number, expand: boolean): Promise<GpuInjectTarget> {
    const ctx = new GpuContext(await openDevice());
    const invFreq = ropeInvFreq({ headDim: shape.headDim, ropeTheta: 500_000, ropeScaling: null });
    const freqBuffer = ctx.storage(invFreq.byteLength, 'inv freq');
    ctx.device.queue.writeBuffer(freqBuffer, 0, invFreq);
    const expander: Expander<LayerWrite> = expand
      ? // No transform tables: this target is fed the int and fp16 codecs only.
        layerExpander({ ctx, tables: new GpuTransformTables(ctx) }, freqBuffer, shape)
      : { batchKey: () => 'staged', record: () => undefined };
    // Blocks from a same-host edge's files are read into staging on libuv's pool, as the engine's are.
    const injector = new KvInjector<LayerWrite>(ctx, expander, { files: new BlockFiles() });
    const pool = new KvBufferPool(ctx);
    const owner = { pool, whenSubmitted: (release: () => void) => injector.whenSubmitted(release) };
    const cache = new GpuKVCache(ctx, capacity, shape.layers, shape.kvHeads * shape.headDim, owner);
    cache.reserve(capacity, () => injector.recorder());
    await injector.settle();
    return new GpuInjectTarget(ctx, cache, injector, [freqBuffer], pool);
  }

  async injectKV(object: KVBlockReader, position: number): Promise<void> {
    if (position !== this.length) throw new KdnError('INVALID_ARGUMENT', `target at ${this.length} asked to inject at ${position}`);
    const header = object.header;
    for await (const block of object.layers) {
      const t0 = performance.now();
      await this.injector.writeBlock(block, { cache: this.cache, layer: block.layer, header, position });
      this.hostWriteMs += performance.now() - t0;
    }
    this.length += header.tokens;
  }

  /** Waits for the GPU, returns this pass's timings and starts the next pass at position 0. */
  async finish(): Promise<GpuInjectTiming> {
    const t0 = performance.now();
    await this.injector.settle();
    await this.ctx.device.queue.onSubmittedWorkDone();
    const readBlocks = this.injector.work().readBlocks;
    const timing = { hostWriteMs: this.hostWriteMs, settleMs: performance.now() - t0, readBlocks: readBlocks - this.readBefore };
    this.length = 0;
    this.hostWriteMs = 0;
    this.readBefore = readBlocks;
    return timing;
  }

  async close(): Promise<void> {
    this.cache.dispose();
    await this.injector.destroy();
    this.pool.destroy();
    for (const b of this.buffers) b.destroy();
    await this.ctx.dispose();
  }
}
