/**
 * One object a KvFetchPool worker is fetching, as the event loop sees it: the header, then either the verified
 * layers (once the reader's `layers` are read here, the worker delivers them) or, once routed, nothing but progress
 * while the worker sends the blocks straight to the engine's thread (routed-stream.ts). Either way `drained` and
 * `received` follow the download, and a failure reaches the reader.
 */
import type { MessagePort } from 'node:worker_threads';
import { fromWireError, KdnError } from '../../common/errors.ts';
import type { RoutableReader } from '../../engine-adapter/worker/routed-stream.ts';
import { verifiedBlock } from '../../storage/kv-object/index.ts';
import type { KVBlockSource, KVLayerBlock } from '../../storage/kv-object/types.ts';
import type { FetchedObject } from './kv-fetcher.ts';
import type { FromWorker, ToWorker } from './kv-fetch-protocol.ts';
import { LayerQueue, type PrefetchedReader } from './prefetch.ts';

export type PoolReader = PrefetchedReader & RoutableReader;

export class PoolTransfer {
  readonly header: Promise<FetchedObject>;
  received = 0;
  /** Runs after every change of state (the pool drops a settled transfer, refs its worker while one is awaited). */
  onChange: () => void = () => undefined;
  private resolveHeader!: (o: FetchedObject) => void;
  private rejectHeader!: (err: Error) => void;
  private readonly queue = new LayerQueue();
  private fetched: FetchedObject | undefined;
  private destination: 'here' | 'routed' | undefined;
  private arrived = false;
  private failed = false;
  private markArrived!: () => void;
  private readonly drained = new Promise<void>((resolve) => (this.markArrived = resolve));
  private toBlock: (layer: number, encoded: Uint8Array, source?: KVBlockSource) => KVLayerBlock = () => {
    throw new KdnError('INTERNAL', 'fetch worker sent a layer before the header');
  };

  constructor(
    readonly id: number,
    private readonly send: (message: ToWorker, transfer?: MessagePort[]) => void,
    /** Told the payload bytes of each block the worker hands to this thread. */
    private readonly onDelivered: (bytes: number) => void,
    /** Its blocks come here as they are verified (the worker was opened with `deliver`): it cannot be routed. */
    deliveredNow = false,
  ) {
    if (deliveredNow) this.destination = 'here';
    this.header = new Promise((resolve, reject) => {
      this.resolveHeader = resolve;
      this.rejectHeader = reject;
    });
    this.header.catch(() => undefined);
  }

  /** No more messages will come for it: failed, read to the end here, or arrived after it was routed. */
  get settled(): boolean {
    return this.failed || this.queue.done || (this.arrived && this.destination === 'routed');
  }

  /** Someone waits on the worker for it (the download, or blocks being delivered here), not just held there. */
  get awaited(): boolean {
    return !this.settled && (!this.arrived || this.destination === 'here');
  }

  /** The object arrived whole and nobody has asked for its blocks yet (they wait on the worker). */
  get unclaimed(): boolean {
    return this.arrived && this.destination === undefined && !this.failed;
  }

  handle(message: FromWorker): void {
    if ('received' in message) this.received = message.received;
    switch (message.type) {
      case 'header':
        this.opened(message);
        break;
      case 'layers':
        for (const { layer, bytes, source } of message.layers) {
          this.onDelivered(bytes.byteLength);
          this.queue.push(this.toBlock(layer, bytes, source));
        }
        break;
      case 'source':
        if (this.fetched) Object.assign(this.fetched, { servedFrom: message.servedFrom, edge: message.edge });
        break;
      case 'progress':
        break;
      case 'arrived':
        this.arrive();
        break;
      case 'end':
        this.arrive();
        this.queue.end();
        break;
      case 'error':
        // A failed object nobody asked for yet is kept on the worker for a route that may be on its way; none is now.
        if (this.destination === undefined) this.send({ type: 'abort', id: this.id });
        this.fail(fromWireError(message.error));
        return;
    }
    this.onChange();
  }

  fail(err: Error): void {
    if (this.settled) return;
    this.failed = true;
    this.rejectHeader(err);
    this.queue.fail(err);
    this.arrive();
    this.onChange();
  }

  private opened(message: Extract<FromWorker, { type: 'header' }>): void {
    const header = message.header;
    this.toBlock = (layer, encoded, source) => verifiedBlock(header, layer, encoded, source);
    const reader: PoolReader = { header, layers: this.layers(), drained: this.drained, route: (port) => this.route(port) };
    this.fetched = { reader, servedFrom: message.servedFrom, edge: message.edge, received: () => this.received };
    this.resolveHeader(this.fetched);
  }

  private arrive(): void {
    this.arrived = true;
    this.markArrived();
  }

  /** The blocks, asked of the worker when first read here. */
  private async *layers(): AsyncGenerator<KVLayerBlock> {
    if (this.destination === 'routed') throw new KdnError('INTERNAL', 'the layers of a routed KV object were read on the event loop');
    if (this.destination === undefined) {
      this.destination = 'here';
      if (!this.failed) this.send({ type: 'deliver', id: this.id });
      this.onChange();
    }
    yield* this.queue.layers();
  }

  private route(port: MessagePort): boolean {
    if (this.destination !== undefined || this.failed) return false;
    this.destination = 'routed';
    this.send({ type: 'route', id: this.id, port }, [port]);
    this.onChange();
    return true;
  }
}
