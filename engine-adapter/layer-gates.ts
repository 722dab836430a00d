import { KdnError } from '../common/errors.ts';

/**
 * Which layers of a context are in place, for a forward that runs each layer as soon as the context's copy of it
 * is. Whoever places the context reports how many leading layers are written; a forward waiting on one of them
 * starts them on their way (`flush`) only then, so writes are batched for as long as nothing waits on them. One
 * failure fails every wait, present and future.
 */
export class LayerGates {
  private written = 0;
  /** performance.now() when layer 0 of the whole context was written (undefined before). */
  firstLayerAt: number | undefined;
  private flushed = 0;
  private failure: { error: unknown } | undefined;
  private waiters: { layer: number; resolve: () => void; reject: (err: unknown) => void }[] = [];
  private markStopped!: () => void;
  /** Resolves once the gates failed: whoever places the context can stop. */
  readonly stopped = new Promise<void>((resolve) => (this.markStopped = resolve));

  constructor(
    readonly layers: number,
    private readonly flush: () => void = () => {},
  ) {}

  /** Layers [0, count) of the whole context are written. */
  setWritten(count: number): void {
    if (count < this.written || count > this.layers)
      throw new KdnError('INTERNAL', `${count} layers written after ${this.written} of ${this.layers}`);
    if (count > 0) this.firstLayerAt ??= performance.now();
    this.written = count;
    this.waiters = this.waiters.filter((w) => {
      if (w.layer >= count) return true;
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

  /** Resolves once `layer` is written and on its way; rejects with the failure if the context could not be placed. */
  async wait(layer: number): Promise<void> {
    if (this.failure) throw this.failure.error;
    if (layer >= this.written) await new Promise<void>((resolve, reject) => this.waiters.push({ layer, resolve, reject }));
    if (layer >= this.flushed) {
      this.flush();
      this.flushed = this.written;
    }
  }
}

/** Awaited by a backend's forward before it runs `layer` (see ForwardBackend.forward). */
export type LayerGate = (layer: number) => Promise<void>;
