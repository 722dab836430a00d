/**
 * Buffers for large bodies, used again once their reader is done with them. A fresh buffer for every object cost
 * more than the copy into it: its pages fault in on first write (and the faults of every thread in the process queue
 * on one lock), and freeing it unmaps them again. kdn's fetch threads receive KV objects into them, and the engine
 * sends a routed object's buffers back as it writes their blocks (engine-adapter/worker/routed-stream.ts ReturnedBuffers); a
 * block read from a same-host file goes there without its buffer, which the fetch thread takes back at once
 * (kdn/query/block-outlet.ts). An edge reads memory-tier objects held only in shared memory into them to answer
 * (edge/server/server.ts). Memory held is bounded, and given back after a while without use.
 */

/** Buffers are sized in these steps, so objects of nearby sizes share them. */
const STEP_BYTES = 64 * 1024;
/** A held buffer serves a request at most this many times smaller than itself (else a new one is made). */
const MAX_SLACK = 2;

/** Bytes of the views `take` handed out, by whether a held buffer served them. */
export interface ReusedBufferStats {
  reusedBytes: number;
  freshBytes: number;
}

export class ReusedBuffers {
  readonly stats: ReusedBufferStats = { reusedBytes: 0, freshBytes: 0 };
  private free: ArrayBuffer[] = [];
  /** The buffers of the views handed out and not yet given back (owns). */
  private readonly out = new WeakSet<ArrayBuffer>();
  private heldBytes = 0;
  private trim: NodeJS.Timeout | undefined;

  /**
   * `capBytes`: most bytes held for reuse (0: none, every request gets a new buffer). `idleMs`: held buffers are
   * dropped after this long without a request.
   */
  constructor(
    readonly capBytes: number,
    private readonly idleMs = 60_000,
  ) {}

  /** Bytes held for reuse now. */
  get held(): number {
    return this.heldBytes;
  }

  /**
   * A `size`-byte view at the start of a buffer of its own (the view's buffer may be larger; transfer it whole). Its
   * bytes are not zeroed: the caller writes all of them before reading any.
   */
  take(size: number): Uint8Array {
    this.touch();
    let best = -1;
    for (let i = 0; i < this.free.length; i++) {
      const b = this.free[i]!.byteLength;
      if (b >= size && b <= Math.max(size * MAX_SLACK, STEP_BYTES) && (best < 0 || b < this.free[best]!.byteLength)) best = i;
    }
    let buffer: ArrayBuffer;
    if (best < 0) {
      this.stats.freshBytes += size;
      buffer = Buffer.allocUnsafeSlow(Math.max(STEP_BYTES, Math.ceil(size / STEP_BYTES) * STEP_BYTES)).buffer as ArrayBuffer;
    } else {
      this.stats.reusedBytes += size;
      buffer = this.free.splice(best, 1)[0]!;
      this.heldBytes -= buffer.byteLength;
    }
    this.out.add(buffer);
    return new Uint8Array(buffer, 0, size);
  }

  /** Whether `view` is one `take` handed out, its buffer free to transfer whole. */
  owns(view: Uint8Array): boolean {
    return view.byteOffset === 0 && view.buffer instanceof ArrayBuffer && this.out.has(view.buffer);
  }

  /** Keeps `buffer` for a later take, unless that would hold more than the cap (it is then left to the collector). */
  give(buffer: ArrayBuffer): void {
    this.out.delete(buffer);
    if (buffer.byteLength === 0 || this.heldBytes + buffer.byteLength > this.capBytes) return;
    this.free.push(buffer);
    this.heldBytes += buffer.byteLength;
    this.touch();
  }

  private touch(): void {
    if (this.capBytes === 0) return;
    this.trim?.refresh();
    this.trim ??= setTimeout(() => {
      this.free = [];
      this.heldBytes = 0;
      this.trim = undefined;
    }, this.idleMs).unref();
  }
}
