import { KdnError } from '../common/errors.ts';
import type { PlacingTimeline } from './placing-timeline.ts';

/**
 * How many pieces, at most, a forward over an arriving context is submitted in (gateBatch). Each piece costs the
 * engine's thread two submissions, the context's staged writes and the forward's layers, about half a millisecond
 * each on an 8B model; at a piece per layer that was 30-40 ms per query, on the thread that bounds it, while the
 * question's layers take well under a millisecond of GPU time each at 8k tokens of context.
 */
const FORWARD_PIECES = 8;

/** The layers a gated forward waits for at once: a model of `layers` layers runs in FORWARD_PIECES pieces or fewer. */
export function gateBatch(layers: number): number {
  return Math.max(1, Math.ceil(layers / FORWARD_PIECES));
}

/**
 * Which layers of a context are in place, for a forward that runs its layers as soon as the context's copy of them
 * is. Whoever places the context reports how many leading layers are written; a forward waiting on one of them
 * starts them on their way (`flush`) only then, so writes are batched for as long as nothing waits on them. A wait
 * holds out for `batch` layers from the one asked for (fewer at the end), so that the forward records them in one
 * piece. One failure fails every wait, present and future.
 */
export class LayerGates {
  private written = 0;
  /** performance.now() when layer 0 of the whole context was written (undefined before). */
  firstLayerAt: number | undefined;
  private flushed = 0;
  private failure: { error: unknown } | undefined;
  private waiters: { count: number; resolve: () => void; reject: (err: unknown) => void }[] = [];
  private markStopped!: () => void;
  /** Resolves once the gates failed: whoever places the context can stop. */
  readonly stopped = new Promise<void>((resolve) => (this.markStopped = resolve));

  /** `timeline`: where each wait is recorded (placing-timeline.ts), when the call asked for one. */
  constructor(
    readonly layers: number,
    private readonly flush: () => void | Promise<void> = () => {},
    private readonly batch = 1,
    private readonly timeline?: PlacingTimeline,
  ) {}

  /** Layers [0, count) of the whole context are written. */
  setWritten(count: number): void {
    if (count < this.written || count > this.layers)
      throw new KdnError('INTERNAL', `${count} layers written after ${this.written} of ${this.layers}`);
    if (count > 0) this.firstLayerAt ??= performance.now();
    this.timeline?.layersReady(this.written, count);
    this.written = count;
    this.waiters = this.waiters.filter((w) => {
      if (w.count > count) return true;
      w.resolve();
      return false;
    });
  }

  fail(error: unknown): void {
    if (this.failure) return;
    this.failure = { error };
    for (const w of this.waiters) w.reject(error);
    this.waiters = [];
    this.markStopped();
  }

  /**
   * Resolves once `layer` and the batch after it are written and on their way, with how many leading layers are
   * (more than `layer`); rejects with the failure if the context could not be placed.
   */
  async wait(layer: number): Promise<number> {
    if (this.failure) throw this.failure.error;
    const askedAt = performance.now();
    const count = Math.min(layer + this.batch, this.layers);
    if (layer >= this.written) await new Promise<void>((resolve, reject) => this.waiters.push({ count, resolve, reject }));
    const writtenAt = performance.now();
    if (layer >= this.flushed) {
      const written = this.written;
      await this.flush();
      this.flushed = Math.max(this.flushed, written);
    }
    this.timeline?.gate(layer, askedAt, writtenAt, this.flushed);
    return this.flushed;
  }
}

/**
 * Awaited by a backend's forward before it runs `layer` (see ForwardBackend.forward); resolves with how many leading
 * layers it may run (more than `layer`). `timeline`: where the forward records its pieces and the injector its sends,
 * when the call asked for one.
 */
export type LayerGate = ((layer: number) => Promise<number>) & { readonly timeline?: PlacingTimeline };
