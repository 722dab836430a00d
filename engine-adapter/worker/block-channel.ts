import type { MessagePort } from 'node:worker_threads';
import { fromWireError, KdnError } from '../../common/errors.ts';
import { verifiedBlock } from '../../storage/kv-object/index.ts';
import type { KVBlock, KVBlockReader, KVHeader, LayerVerification } from '../../storage/kv-object/types.ts';
import type { ReturnedBuffers, RoutedBlock, RoutedBlocks } from './routed-stream.ts';

/**
 * The worker's end of a KV object streamed from the control plane, or routed straight from a fetch thread over a
 * port (routed-stream.ts): blocks are queued as their messages arrive and read by the session as a KVBlockReader,
 * so injection starts with the first layer, not the last (the session checks their order and count, whichever way
 * they came). A block that came as its source alone is a KVFileBlock: the backend reads it from the file. Blocks a
 * fetch thread announced before verifying them count as verified only as its `verified` messages say
 * (storage LayerVerification); every other block is verified as it comes.
 */
export class BlockChannel {
  readonly reader: KVBlockReader;
  private readonly blocks: KVBlock[] = [];
  private failure: { error: unknown } | undefined;
  private ended = false;
  /** performance.now() when the stream's first block arrived. */
  firstBlockAt: number | undefined;
  /** performance.now() when the stream ended (its last block, or its failure, arrived). */
  endedAt: number | undefined;
  /** performance.now() when each layer's block arrived (placing-timeline.ts layersArrivedMs). */
  readonly arrivedAt: number[] = [];
  private wake: (() => void) | undefined;
  private port: MessagePort | undefined;
  /**
   * The buffers of the blocks that came over `port`, with how many of their blocks the session has not yet taken
   * past. A buffer goes back to the fetch thread as soon as that count reaches zero, so the next objects (of this
   * query too) are received into it, and this thread never holds more than the blocks in flight: hundreds of
   * megabytes of arrived buffers held to the end of a query set off full collections on this thread.
   */
  private readonly unread = new Map<ArrayBuffer, number>();
  /** Buffers done with, sent back together once per turn of the event loop. */
  private done: ArrayBuffer[] = [];
  private returning: NodeJS.Immediate | undefined;
  private readonly header: KVHeader;
  private readonly verification: StreamVerification;

  constructor(header: KVHeader) {
    this.header = header;
    this.verification = new StreamVerification(header.layers);
    this.reader = { header, layers: this.layers(), verification: this.verification };
  }

  /** A block: its bytes (and maybe where they lie), or only where they lie; verified unless announced. */
  push(block: RoutedBlock): void {
    if (this.ended) return;
    const { layer, bytes, source } = block;
    this.arrivedAt[layer] = performance.now();
    this.firstBlockAt ??= this.arrivedAt[layer];
    this.blocks.push(bytes === undefined ? { layer, source: block.source } : verifiedBlock(this.header, layer, bytes, source));
    if (bytes !== undefined || block.announced !== true) this.verified(layer + 1);
    this.signal();
  }

  /** The stream's leading `through` layers are verified. */
  verified(through: number): void {
    if (!this.ended) this.verification.advance(through);
  }

  end(): void {
    this.ended = true;
    this.endedAt ??= performance.now();
    this.signal();
  }

  fail(error: KdnError): void {
    if (this.ended) return;
    this.failure = { error };
    this.end();
  }

  /** Takes the stream's blocks from `port` (a fetch thread's end of it); a port closed before `end` fails it. */
  listen(port: MessagePort): void {
    this.port = port;
    port.on('message', (message: RoutedBlocks) => {
      if (message.type === 'blocks')
        for (const block of message.blocks) {
          if (block.bytes) {
            const buffer = block.bytes.buffer as ArrayBuffer;
            this.unread.set(buffer, (this.unread.get(buffer) ?? 0) + 1);
          }
          this.push(block);
        }
      else if (message.type === 'verified') this.verified(message.through);
      else if (message.type === 'end') this.end();
      else this.fail(fromWireError(message.error));
    });
    port.on('close', () =>
      this.fail(new KdnError('EDGE_UNAVAILABLE', 'the fetch thread sending a KV object went away', { hint: 'refetch the object' })),
    );
  }

  /**
   * Ends the port, if any, once the stream's injection is over either way (the fetch thread stops sending). The
   * buffers whose blocks were all taken past go back first; after a failure the others are left to the collector,
   * since a write still in flight may read them.
   */
  close(): void {
    if (!this.port) return;
    clearImmediate(this.returning);
    this.returnDone();
    this.unread.clear();
    this.port.close();
  }

  private async *layers(): AsyncGenerator<KVBlock> {
    for (;;) {
      const block = this.blocks.shift();
      if (block) {
        // The session asks for the next block only once this one is written (Backend.writeKVLayer keeps no bytes).
        yield block;
        if (block.encoded) this.taken(block.encoded.buffer as ArrayBuffer);
        continue;
      }
      if (this.failure) throw this.failure.error;
      if (this.ended) return;
      await new Promise<void>((resolve) => (this.wake = resolve));
    }
  }

  private taken(buffer: ArrayBuffer): void {
    const left = this.unread.get(buffer);
    if (left === undefined) return;
    if (left > 1) {
      this.unread.set(buffer, left - 1);
      return;
    }
    this.unread.delete(buffer);
    this.done.push(buffer);
    this.returning ??= setImmediate(() => this.returnDone());
  }

  private returnDone(): void {
    this.returning = undefined;
    if (this.done.length === 0 || !this.port) return;
    const buffers = this.done;
    this.done = [];
    this.port.postMessage({ type: 'return', buffers } satisfies ReturnedBuffers, buffers);
  }

  private signal(): void {
    this.wake?.();
    this.wake = undefined;
  }
}

/** How many leading layers of a channel's stream are verified (storage LayerVerification). */
class StreamVerification implements LayerVerification {
  through = 0;
  private readonly listeners: (() => void)[] = [];

  constructor(private readonly layers: number) {}

  onAdvance(listener: () => void): void {
    this.listeners.push(listener);
  }

  advance(through: number): void {
    if (through <= this.through) return;
    this.through = Math.min(through, this.layers);
    for (const listener of this.listeners) listener();
  }
}
