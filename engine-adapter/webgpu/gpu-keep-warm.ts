/**
 * Keeps the GPU from idling between queries. On the NVIDIA hosts measured, the engine's work through Vulkan ran up to
 * three times slower after the GPU had idled for half a second (its clocks lowered), where gaps of 150 ms or less left
 * it at full speed, and transformers' work through CUDA did not slow after the same idle (bench/HISTORY.md). So a
 * server that wants its first query after a quiet spell as fast as the rest can have the engine submit a little work
 * whenever it submitted nothing for `intervalMs`: a few element-wise passes over a scratch buffer, a fraction of a
 * millisecond of GPU time each. It costs power while the server idles, which is why it is off unless asked for.
 */
import { KdnError } from '../../common/errors.ts';
import type { GpuContext } from './gpu-context.ts';
import { recordAdd } from './kernels/add.ts';

/** Below this the ticks' work would keep a good share of the GPU busy while the server idles. */
export const MIN_KEEP_WARM_MS = 10;

/** Elements of each scratch buffer, and passes per tick: about a quarter of a millisecond on a data-centre GPU. */
const ELEMENTS = 16 * 1024 * 1024;
const PASSES = 4;

export class GpuKeepWarm {
  private readonly timer: NodeJS.Timeout;
  private readonly x: GPUBuffer;
  private readonly y: GPUBuffer;
  /** A tick's work not yet known to be done: the next tick adds none, so idle ticks never queue up. */
  private pending = false;
  private stopped = false;
  /** Ticks that found the queue idle and submitted work. */
  ticks = 0;

  constructor(
    private readonly ctx: GpuContext,
    private readonly intervalMs: number,
  ) {
    if (!(Number.isInteger(intervalMs) && intervalMs >= MIN_KEEP_WARM_MS)) {
      throw new KdnError(
        'INVALID_ARGUMENT',
        `the GPU keep-warm interval must be a whole number of ms from ${MIN_KEEP_WARM_MS}, got ${intervalMs}`,
        {
          hint: `use ${MIN_KEEP_WARM_MS} ms or more, or leave keep-warm off`,
        },
      );
    }
    this.x = ctx.storage(ELEMENTS * 4, 'keep-warm x');
    this.y = ctx.storage(ELEMENTS * 4, 'keep-warm y');
    // Unreferenced: keeping the GPU warm never keeps the process alive.
    this.timer = setInterval(() => this.tick(), Math.floor(intervalMs / 2)).unref();
  }

  private tick(): void {
    if (this.stopped || this.pending || this.ctx.msSinceSubmit() < this.intervalMs) return;
    const rec = this.ctx.recorder();
    for (let i = 0; i < PASSES; i++) recordAdd(this.ctx, rec, { x: this.x, y: this.y, count: ELEMENTS });
    this.pending = true;
    this.ticks++;
    rec.submit().then(
      () => void (this.pending = false),
      () => void (this.pending = false),
    );
  }

  /** Stops the timer and frees the scratch buffers (work already submitted still runs). */
  stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    clearInterval(this.timer);
    this.x.destroy();
    this.y.destroy();
  }
}
