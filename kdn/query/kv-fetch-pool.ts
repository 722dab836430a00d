/**
 * A KvFetcher over worker threads (kv-fetch-worker.ts): each worker runs its own edge client and verifies what it
 * receives, so sockets are read and layers hashed on several cores while the event loop only injects. Verified
 * blocks arrive by transfer; a layer reaches the reader only after its checksum matched on the worker.
 */
import { Worker } from 'node:worker_threads';
import { KdnError } from '../../common/errors.ts';
import { verifiedBlock } from '../../storage/kv-object/index.ts';
import type { KVExpectation, KVLayerBlock } from '../../storage/kv-object/types.ts';
import type { FetchedObject, KvFetcher } from './kv-fetcher.ts';
import type { FromWorker, ToWorker, WorkerEdgeOptions, WorkerSetup } from './kv-fetch-protocol.ts';
import { LayerQueue, type PrefetchedReader } from './prefetch.ts';

const ENTRY = new URL('./kv-fetch-worker.js', import.meta.url);

/** One object in flight: the header promise, then its layers queued until the reader takes them. */
class Transfer {
  readonly header: Promise<FetchedObject>;
  private resolveHeader!: (o: FetchedObject) => void;
  private rejectHeader!: (err: Error) => void;
  private readonly queue = new LayerQueue();
  private toBlock: (layer: number, encoded: Uint8Array) => KVLayerBlock = () => {
    throw new KdnError('INTERNAL', 'fetch worker sent a layer before the header');
  };
  received = 0;
  /** Runs once the transfer ended either way (e.g. to drop its abort listener). */
  onFinish: () => void = () => undefined;

  constructor() {
    this.header = new Promise((resolve, reject) => {
      this.resolveHeader = resolve;
      this.rejectHeader = reject;
    });
    this.header.catch(() => undefined);
  }

  get done(): boolean {
    return this.queue.done;
  }

  handle(message: FromWorker): void {
    if ('received' in message) this.received = message.received;
    switch (message.type) {
      case 'header': {
        const header = message.header;
        this.toBlock = (layer, encoded) => verifiedBlock(header, layer, encoded);
        const reader: PrefetchedReader = { header, layers: this.queue.layers(), drained: this.queue.drained };
        this.resolveHeader({ reader, servedFrom: message.servedFrom, edge: message.edge, received: () => this.received });
        return;
      }
      case 'layer':
        this.queue.push(this.toBlock(message.layer, message.bytes));
        return;
      case 'layers':
        for (const { layer, bytes } of message.layers) this.queue.push(this.toBlock(layer, bytes));
        return;
      case 'end':
        this.queue.end();
        this.onFinish();
        return;
      case 'error':
        this.fail(new KdnError(message.error.code, message.error.message, message.error.hint ? { hint: message.error.hint } : {}));
        return;
    }
  }

  fail(err: Error): void {
    this.rejectHeader(err);
    this.queue.fail(err);
    this.onFinish();
  }
}

/** A worker and the transfers it serves; it keeps the process alive only while some are in flight. */
class PoolWorker {
  readonly transfers = new Map<number, Transfer>();
  alive = true;
  private readonly worker: Worker;

  constructor(setup: WorkerSetup) {
    this.worker = new Worker(ENTRY, { workerData: setup });
    this.worker.unref();
    this.worker.on('message', (message: FromWorker) => {
      const transfer = this.transfers.get(message.id);
      if (!transfer) return;
      transfer.handle(message);
      if (transfer.done) this.release(message.id);
    });
    this.worker.on('error', (err) => this.failAll(`fetch worker failed: ${err.message}`));
    this.worker.on('exit', (code) => this.failAll(`fetch worker exited with code ${code}`));
  }

  send(message: ToWorker): void {
    this.worker.postMessage(message);
  }

  track(id: number, transfer: Transfer): void {
    this.transfers.set(id, transfer);
    this.worker.ref();
  }

  release(id: number): void {
    this.transfers.delete(id);
    if (this.transfers.size === 0) this.worker.unref();
  }

  async terminate(): Promise<void> {
    this.failAll('the fetch pool was closed');
    await this.worker.terminate();
  }

  private failAll(message: string): void {
    if (!this.alive) return;
    this.alive = false;
    const err = new KdnError('EDGE_UNAVAILABLE', message, { hint: 'refetch the object' });
    for (const t of this.transfers.values()) t.fail(err);
    this.transfers.clear();
  }
}

export class KvFetchPool implements KvFetcher {
  private readonly workers: PoolWorker[] = [];
  /** Transform tables every worker gets, those started later included. */
  private readonly tables: Uint8Array[] = [];
  private nextId = 1;
  private closed = false;

  /** `sharedMemory: false` keeps every fetch on HTTP even from same-host edges (benchmarks compare the two). */
  constructor(
    private readonly options: WorkerEdgeOptions,
    readonly threads: number,
    private readonly fetchOptions: { sharedMemory?: boolean } = {},
  ) {
    if (!Number.isInteger(threads) || threads < 1)
      throw new KdnError('INVALID_ARGUMENT', `a fetch pool needs at least one thread, got ${threads}`);
  }

  open(key: string, expect: KVExpectation, signal: AbortSignal): Promise<FetchedObject> {
    if (this.closed) return Promise.reject(new KdnError('INTERNAL', 'the fetch pool is closed'));
    if (signal.aborted)
      return Promise.reject(
        new KdnError('TIMEOUT', 'edge request aborted by the caller', { hint: 'the signal passed to the fetcher fired' }),
      );
    const worker = this.pick();
    const id = this.nextId++;
    const transfer = new Transfer();
    worker.track(id, transfer);
    const abort = (): void => worker.send({ type: 'abort', id });
    signal.addEventListener('abort', abort, { once: true });
    transfer.onFinish = () => signal.removeEventListener('abort', abort);
    worker.send({ type: 'open', id, key, expect });
    return transfer.header;
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
      const worker = new PoolWorker({ edge: this.options, sharedMemory: this.fetchOptions.sharedMemory ?? true });
      for (const bytes of this.tables) worker.send({ type: 'table', bytes });
      this.workers.push(worker);
    }
    return this.workers.reduce((best, w) => (w.transfers.size < best.transfers.size ? w : best));
  }
}
