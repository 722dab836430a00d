/**
 * The order in which a fetch thread reads the shared-memory files queued on it (shm-source.ts) and hands their layers
 * over. It reads a few layers of one file per step (about STEP_BYTES, verified before they go), and each turn of the
 * event loop takes its steps after the messages that came meanwhile (other objects to open, routes to the engine's
 * thread).
 *
 * Interleaved objects belong to a query that uses layer l of every chunk together (the overlapped and blend paths,
 * engine-adapter/layer-gates.ts): they are read round-robin, a step of each per turn, the first step layer 0 alone, so
 * every object's layer 0 is handed over before any object's later layers and the question's first layers run while
 * later ones are still read.
 * Read one file after another, the question's layer 0 would wait for the last file. Other objects, injected one after
 * another, are read whole in the order they were opened, so the first is complete first.
 *
 * With verifyAlongside (kv-fetch-pool.ts FetchPoolOptions) an interleaved reading first announces every layer's file
 * block (BlockOutlet.announce), then takes its steps the same way, each step telling how far the layers are verified.
 * A layer that fails then fails the object if the announcement already went to the engine's thread, since the layers
 * after it were handed over before they were checked; otherwise the rest comes over HTTP as for any reading.
 */
import { KdnError } from '../../common/errors.ts';
import type { KVHeader } from '../../storage/kv-object/types.ts';
import type { BlockOutlet, OutletBlock } from './block-outlet.ts';
import type { ShmFile, ShmLayers, ShmSource } from './shm-source.ts';

/** About how many bytes of one file a step reads and verifies (at least one layer). */
export const STEP_BYTES = 1 << 20;

/**
 * 'done': every layer was handed over. Otherwise a layer failed verification or could not be read: the layers before
 * `from` went, and the rest must come from elsewhere behind that same header.
 */
export type ShmOutcome = 'done' | { header: KVHeader; from: number };

/**
 * How a reading's layers go: in turns with the other interleaved readings, and (interleaved ones only) announced
 * before verification.
 */
export interface HandOverOrder {
  interleave: boolean;
  verifyAlongside: boolean;
}

interface Reading {
  file: ShmFile;
  outlet: BlockOutlet;
  signal: AbortSignal;
  interleave: boolean;
  /** The first layer not handed over yet. */
  next: number;
  resolve: (outcome: ShmOutcome) => void;
  reject: (err: Error) => void;
}

export class ShmHandOver {
  private readonly queue: Reading[] = [];
  private running = false;

  /**
   * `own`: a copy of a block's bytes in a buffer of its own, for the blocks that do not lie in the step's buffer
   * (lz4 layers, decompressed into buffers they may share).
   */
  constructor(
    private readonly source: ShmSource,
    private readonly own: (bytes: Uint8Array) => Uint8Array,
    private readonly stepBytes = STEP_BYTES,
  ) {}

  /** Hands `file`'s layers over through `outlet` (see ShmOutcome); rejects with TIMEOUT once `signal` aborts. */
  add(file: ShmFile, outlet: BlockOutlet, signal: AbortSignal, order: HandOverOrder): Promise<ShmOutcome> {
    const { interleave } = order;
    if (interleave && order.verifyAlongside) {
      const sources = this.source.sources(file);
      if (sources) outlet.announce(sources);
    }
    return new Promise((resolve, reject) => {
      this.queue.push({ file, outlet, signal, interleave, next: 0, resolve, reject });
      if (!this.running) void this.run();
    });
  }

  private async run(): Promise<void> {
    this.running = true;
    while (this.queue.length > 0) {
      await new Promise((resolve) => setImmediate(resolve));
      for (const reading of this.turn()) {
        try {
          await this.step(reading);
        } catch (err) {
          // Not a bad file (step settles those) but a failure handing blocks on: this object fails, the rest go on.
          this.remove(reading);
          await reading.file.close().catch(() => undefined);
          reading.reject(err instanceof Error ? err : new Error(String(err)));
        }
      }
    }
    this.running = false;
  }

  /** Who takes a step this turn: the first in line, or every interleaved reading when the first is one. */
  private turn(): Reading[] {
    const first = this.queue[0]!;
    return first.interleave ? this.queue.filter((r) => r.interleave) : [first];
  }

  private async step(r: Reading): Promise<void> {
    if (r.signal.aborted) {
      this.remove(r);
      await r.file.close().catch(() => undefined);
      r.reject(new KdnError('TIMEOUT', 'edge request aborted by the caller'));
      return;
    }
    let got: ShmLayers;
    try {
      got = await this.source.readLayers(r.file, r.next, this.stepBudget(r));
    } catch (err) {
      this.remove(r);
      await this.source.fail(r.file, err);
      if (r.outlet.withdrawAnnouncement()) r.resolve({ header: r.file.header, from: r.next });
      else
        r.reject(
          new KdnError('KV_CORRUPT', `layer ${r.next} of a shared-memory KV object could not be read or verified after it was announced`, {
            hint: 'refetch the object',
          }),
        );
      return;
    }
    r.outlet.add(
      got.blocks.map(
        (b): OutletBlock => ({
          layer: b.layer,
          bytes: b.encoded.buffer === got.buffer ? b.encoded : this.own(b.encoded),
          source: b.source,
        }),
      ),
      got.read,
    );
    r.next = got.next;
    if (r.next < r.file.header.layers) return;
    this.remove(r);
    this.source.done(r.file);
    // The engine's thread may read the blocks from the file after this: it stays open, its pins valid, as long as
    // the blocks may be read (BlockOutlet.holdOpen).
    r.outlet.holdOpen(() => void r.file.close().catch(() => undefined));
    r.outlet.end(got.read);
    r.resolve('done');
  }

  /**
   * Bytes `r`'s next step may read (it reads one layer at least). An interleaved reading's first step is its layer 0
   * alone: the question's first layer waits for every object's, so those go before any object's later layers (an int4
   * 8B layer is a third of a step).
   */
  private stepBudget(r: Reading): number {
    return r.interleave && r.next === 0 ? 0 : this.stepBytes;
  }

  private remove(r: Reading): void {
    const at = this.queue.indexOf(r);
    if (at >= 0) this.queue.splice(at, 1);
  }
}
