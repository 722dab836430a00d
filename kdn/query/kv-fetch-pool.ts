/**
 * A KvFetcher over worker threads (kv-fetch-worker.ts): each worker runs its own edge client and verifies what it
 * receives, so sockets are read and layers hashed on several cores while the event loop only injects. Verified
 * blocks wait on the worker until asked for: read here they arrive by transfer, routed to the engine's thread
 * (routed-stream.ts) they go there without passing through this one. A layer reaches anyone only after its checksum
 * matched on the worker.
 */
import { type TransferListItem, Worker } from 'node:worker_threads';
import { KdnError } from '../../common/errors.ts';
import type { KVExpectation } from '../../storage/kv-object/types.ts';
import type { FetchedObject, KvFetcher, KvFetchOptions } from './kv-fetcher.ts';
import type { FromWorker, ToWorker, WorkerEdgeOptions, WorkerSetup } from './kv-fetch-protocol.ts';
import { PoolTransfer } from './pool-transfer.ts';
import type { ReusedBufferStats } from '../../common/reused-buffers.ts';
import { DEFAULT_SPOOL_DIR, type SpoolStats } from './receive-spool.ts';

const ENTRY = new URL('./kv-fetch-worker.js', import.meta.url);
const ABORTED_HINT = 'the signal passed to the fetcher fired';
/**
 * Bytes each worker keeps of the buffers the engine returned, to receive into again (common/reused-buffers.ts): an 8B
 * model's 8k-token context is 42 MiB per thread of eight in int4, 134 in fp16. kdn serve's default
 * (`fetchBufferBytes` in kdn/config.ts, which imports no other kdn module) is the same.
 */
export const DEFAULT_RECEIVE_BUFFER_BYTES = 64 * 2 ** 20;
/**
 * Bytes all workers together may hold in spool files (receive-spool.ts), split between them: an 8B model's 32k-token
 * int4 context is 1.3 GB. kdn serve's default (`fetchSpoolBytes` in kdn/config.ts) is the same.
 */
export const DEFAULT_SPOOL_BYTES = 2 * 2 ** 30;
/**
 * Bytes all workers together may have out on the engine's ports (hand-over-window.ts), split between them: under the
 * 64 MB of growth that sets off a collection on the engine's thread, with room for its staging buffers' mapped ranges.
 */
const HAND_OVER_BYTES = 32 * 2 ** 20;
/** A worker's share never goes below this: a step of a same-host read (shm-hand-over.ts) and one more. */
const MIN_HAND_OVER_BYTES = 2 * 2 ** 20;

/** How a pool fetches besides its edge client's options. */
export interface FetchPoolOptions {
  /** false keeps every fetch on HTTP even from same-host edges (benchmarks compare the two). Default true. */
  sharedMemory?: boolean;
  /** Bytes of returned buffers each worker keeps to receive into (0: a new buffer for every object). */
  receiveBufferBytes?: number;
  /**
   * Every object's blocks come to this event loop as they are verified, and none can be routed: for an engine on this
   * thread, or one fed through it. Otherwise a worker holds an object's blocks until its reader is read or routed, and
   * an engine reading here waits on that round trip through a busy worker (bench/HISTORY.md has the figures). Default
   * false.
   */
  deliverEagerly?: boolean;
  /**
   * For objects opened with `interleave` from a same-host edge's shared memory: the fetch thread announces every
   * layer's file block at once and verifies the layers while the engine's thread reads them into staging, reporting
   * how far it got (storage LayerVerification), instead of handing each layer over once verified. The engine
   * computes with a layer only once it is verified; a layer that fails fails the object (the query then fetches it
   * again, chunk by chunk) rather than resuming over HTTP. Objects read on the event loop get verified blocks as
   * usual. Default false.
   */
  verifyAlongside?: boolean;
  /**
   * Bytes all workers together may hold in memory files of blocks they received over HTTP for the engine's thread,
   * which reads them from there (receive-spool.ts); 0 sends every such block with its bytes. Default
   * DEFAULT_SPOOL_BYTES, in `spoolDir` (default /dev/shm; none where that folder does not exist).
   */
  spoolBytes?: number;
  spoolDir?: string;
}

/** A worker and the transfers it serves; it keeps the process alive only while one of them is awaited. */
class PoolWorker {
  readonly transfers = new Map<number, PoolTransfer>();
  alive = true;
  buffers: ReusedBufferStats = { reusedBytes: 0, freshBytes: 0 };
  spool: SpoolStats = { spooledBytes: 0, sentBytes: 0, failures: 0 };
  private readonly worker: Worker;

  constructor(setup: WorkerSetup) {
    this.worker = new Worker(ENTRY, { workerData: setup });
    this.worker.unref();
    this.worker.on('message', (message: FromWorker) => {
      if (message.type === 'buffers') {
        this.buffers = message.stats;
        if (message.spool) this.spool = message.spool;
      } else this.transfers.get(message.id)?.handle(message);
    });
    this.worker.on('error', (err) => this.failAll(`fetch worker failed: ${err.message}`));
    this.worker.on('exit', (code) => this.failAll(`fetch worker exited with code ${code}`));
  }

  send(message: ToWorker, transfer: TransferListItem[] = []): void {
    this.worker.postMessage(message, transfer);
  }

  track(transfer: PoolTransfer): void {
    this.transfers.set(transfer.id, transfer);
    this.refresh(transfer);
  }

  /** Drops `transfer` once settled, and refs the worker while any transfer is awaited. */
  refresh(transfer: PoolTransfer): void {
    if (transfer.settled) this.transfers.delete(transfer.id);
    let awaited = false;
    for (const t of this.transfers.values()) awaited ||= t.awaited;
    if (awaited) this.worker.ref();
    else this.worker.unref();
  }

  async terminate(): Promise<void> {
    this.failAll('the fetch pool was closed');
    await this.worker.terminate();
  }

  private failAll(message: string): void {
    if (!this.alive) return;
    this.alive = false;
    const err = new KdnError('EDGE_UNAVAILABLE', message, { hint: 'refetch the object' });
    // Each failed transfer leaves the map through refresh().
    for (const t of [...this.transfers.values()]) t.fail(err);
  }
}

export class KvFetchPool implements KvFetcher {
  private readonly workers: PoolWorker[] = [];
  /** Transform tables every worker gets, those started later included. */
  private readonly tables: Uint8Array[] = [];
  private nextId = 1;
  private closed = false;
  private delivered = 0;

  constructor(
    private readonly options: WorkerEdgeOptions,
    readonly threads: number,
    private readonly fetchOptions: FetchPoolOptions = {},
  ) {
    if (!Number.isInteger(threads) || threads < 1)
      throw new KdnError('INVALID_ARGUMENT', `a fetch pool needs at least one thread, got ${threads}`);
  }

  open(key: string, expect: KVExpectation, signal: AbortSignal, options: KvFetchOptions = {}): Promise<FetchedObject> {
    if (this.closed) return Promise.reject(new KdnError('INTERNAL', 'the fetch pool is closed'));
    if (signal.aborted) return Promise.reject(new KdnError('TIMEOUT', 'edge request aborted by the caller', { hint: ABORTED_HINT }));
    const worker = this.pick();
    const deliver = this.fetchOptions.deliverEagerly === true;
    const transfer = new PoolTransfer(
      this.nextId++,
      (message, transfer) => worker.send(message, transfer),
      (bytes) => (this.delivered += bytes),
      deliver,
    );
    const abort = (): void => {
      worker.send({ type: 'abort', id: transfer.id });
      // The worker drops blocks nobody asked for without a word; a download in flight answers with its failure.
      if (transfer.unclaimed) transfer.fail(new KdnError('TIMEOUT', 'edge request aborted by the caller', { hint: ABORTED_HINT }));
    };
    signal.addEventListener('abort', abort, { once: true });
    transfer.onChange = () => {
      worker.refresh(transfer);
      if (transfer.settled) signal.removeEventListener('abort', abort);
    };
    worker.track(transfer);
    worker.send({ type: 'open', id: transfer.id, key, expect, deliver, interleave: options.interleave === true });
    return transfer.header;
  }

  /** Payload bytes of layer blocks handed to this thread so far (routed objects add nothing). */
  get deliveredBytes(): number {
    return this.delivered;
  }

  /** Bytes the workers received into buffers the engine had returned, and into new ones (live workers). */
  get receiveBuffers(): ReusedBufferStats {
    const sum = { reusedBytes: 0, freshBytes: 0 };
    for (const w of this.workers) {
      sum.reusedBytes += w.buffers.reusedBytes;
      sum.freshBytes += w.buffers.freshBytes;
    }
    return sum;
  }

  /**
   * What the workers' spools took (receive-spool.ts), as of the objects they finished: blocks routed to the engine's
   * thread with no file of their own, written to a spool file or sent with their bytes.
   */
  get spool(): SpoolStats {
    const sum = { spooledBytes: 0, sentBytes: 0, failures: 0 };
    for (const w of this.workers) {
      sum.spooledBytes += w.spool.spooledBytes;
      sum.sentBytes += w.spool.sentBytes;
      sum.failures += w.spool.failures;
    }
    return sum;
  }

  useTransformTable(bytes: Uint8Array): void {
    this.tables.push(bytes);
    for (const w of this.workers) w.send({ type: 'table', bytes });
  }

  async close(): Promise<void> {
    this.closed = true;
    await Promise.all(this.workers.map((w) => w.terminate()));
    this.workers.length = 0;
  }

  /** The least busy live worker; dead ones are replaced (their transfers already failed). */
  private pick(): PoolWorker {
    for (let i = this.workers.length - 1; i >= 0; i--) if (!this.workers[i]!.alive) this.workers.splice(i, 1);
    if (this.workers.length < this.threads) {
      const worker = new PoolWorker({
        edge: this.options,
        sharedMemory: this.fetchOptions.sharedMemory ?? true,
        receiveBufferBytes: this.fetchOptions.receiveBufferBytes ?? DEFAULT_RECEIVE_BUFFER_BYTES,
        handOverBytes: Math.max(MIN_HAND_OVER_BYTES, Math.floor(HAND_OVER_BYTES / this.threads)),
        verifyAlongside: this.fetchOptions.verifyAlongside === true,
        spool: {
          dir: this.fetchOptions.spoolDir ?? DEFAULT_SPOOL_DIR,
          bytes: Math.floor((this.fetchOptions.spoolBytes ?? DEFAULT_SPOOL_BYTES) / this.threads),
        },
      });
      for (const bytes of this.tables) worker.send({ type: 'table', bytes });
      this.workers.push(worker);
    }
    return this.workers.reduce((best, w) => (w.transfers.size < best.transfers.size ? w : best));
  }
}
