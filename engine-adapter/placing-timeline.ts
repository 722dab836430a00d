/**
 * When the parts of one injected prefill happened, for finding where its time goes on a GPU host (bench/ttft.ts
 * --timeline): the gated forward's waits for its context (LayerGates), its pieces and when the GPU finished each, the
 * KV uploads the injector sent, and how long its reads of same-host files took. A call asks for it
 * (PrefillOptions.timeline); it costs the engine's thread a pending GPU answer per piece, so ordinary calls go without.
 * Times are milliseconds from the call's start on the engine's thread (startedAtEpoch on the shared epoch clock).
 */

/** A wait of the forward for layers of its context: asked, the layers written, then flushed towards the GPU. */
export interface GateEvent {
  kind: 'gate';
  layer: number;
  askedMs: number;
  writtenMs: number;
  flushedMs: number;
  /** How many leading layers the forward may run from then on. */
  through: number;
}

/** Layers [from, to) of the forward submitted as one piece, and when the GPU had run everything submitted with it. */
export interface PieceEvent {
  kind: 'piece';
  from: number;
  to: number;
  submittedMs: number;
  doneMs: number | null;
}

/**
 * A staging buffer's bytes and/or a batch of expansion dispatches submitted by the injector; `waitedOnReads`: it
 * waited for reads into it (or an earlier send that did) before it could go.
 */
export interface UploadEvent {
  kind: 'upload';
  atMs: number;
  bytes: number;
  dispatches: number;
  waitedOnReads: boolean;
}

export type TimelineEvent = GateEvent | PieceEvent | UploadEvent;

/** How long the injector's reads of blocks from same-host files took, from asked to done. */
export interface ReadLatencies {
  count: number;
  p50Ms: number;
  p90Ms: number;
  maxMs: number;
  /** When the last read finished. */
  lastDoneMs: number;
}

export interface PlacingTimelineReport {
  /** performance.timeOrigin + performance.now() on the engine's thread at the call's start: the events' zero. */
  startedAtEpoch: number;
  /** Every object's first layer placed, its last layer placed, and the forward's logits back. */
  firstLayerMs: number | null;
  placedMs: number | null;
  logitsMs: number | null;
  /** In the order they happened (a piece where it was submitted). */
  events: TimelineEvent[];
  reads: ReadLatencies | null;
  /** Per layer, when every object's copy of it was written (and verified) and the forward could run it. */
  layersReadyMs: (number | null)[];
  /**
   * Per layer, when the last object's block of it reached the engine's thread (null: one never did). Only an engine on
   * its own thread, which receives the blocks, knows (worker/engine-worker.ts); the gap to layersReadyMs is how far
   * placing fell behind the blocks' arrival.
   */
  layersArrivedMs?: (number | null)[];
}

type Mark = 'firstLayer' | 'placed' | 'logits';

/** Milliseconds to the hundredth, as every figure of a report is kept. */
export function hundredths(ms: number): number {
  return Math.round(ms * 100) / 100;
}

export class PlacingTimeline {
  private readonly t0 = performance.now();
  private readonly events: TimelineEvent[] = [];
  private readonly readMs: number[] = [];
  private lastReadDone = 0;
  private readonly marks = new Map<Mark, number>();
  private readonly ready: number[] = [];

  /** `at` (performance.now()) in the timeline's milliseconds. */
  ms(at = performance.now()): number {
    return hundredths(at - this.t0);
  }

  gate(layer: number, askedAt: number, writtenAt: number, through: number): void {
    this.events.push({ kind: 'gate', layer, askedMs: this.ms(askedAt), writtenMs: this.ms(writtenAt), flushedMs: this.ms(), through });
  }

  /** A piece submitted now; `done` resolves once the GPU ran it (its doneMs stays null if it rejects). */
  piece(from: number, to: number, done: Promise<unknown>): void {
    const event: PieceEvent = { kind: 'piece', from, to, submittedMs: this.ms(), doneMs: null };
    this.events.push(event);
    done.then(
      () => void (event.doneMs = this.ms()),
      () => undefined,
    );
  }

  upload(bytes: number, dispatches: number, waitedOnReads: boolean): void {
    this.events.push({ kind: 'upload', atMs: this.ms(), bytes, dispatches, waitedOnReads });
  }

  /** Layers [from, to) of the context are written now. */
  layersReady(from: number, to: number): void {
    for (let layer = from; layer < to; layer++) this.ready[layer] = this.ms();
  }

  /** A read asked for at `askedAt` (performance.now()) finished now. */
  read(askedAt: number): void {
    const now = performance.now();
    this.readMs.push(now - askedAt);
    this.lastReadDone = Math.max(this.lastReadDone, now);
  }

  mark(what: Mark, at = performance.now()): void {
    this.marks.set(what, this.ms(at));
  }

  report(): PlacingTimelineReport {
    return {
      startedAtEpoch: performance.timeOrigin + this.t0,
      firstLayerMs: this.marks.get('firstLayer') ?? null,
      placedMs: this.marks.get('placed') ?? null,
      logitsMs: this.marks.get('logits') ?? null,
      events: this.events.map((e) => ({ ...e })),
      reads: this.readLatencies(),
      layersReadyMs: Array.from(this.ready, (ms) => ms ?? null),
    };
  }

  private readLatencies(): ReadLatencies | null {
    if (this.readMs.length === 0) return null;
    const sorted = [...this.readMs].sort((a, b) => a - b);
    const at = (q: number): number => hundredths(sorted[Math.floor(q * (sorted.length - 1))]!);
    return { count: sorted.length, p50Ms: at(0.5), p90Ms: at(0.9), maxMs: at(1), lastDoneMs: this.ms(this.lastReadDone) };
  }
}
