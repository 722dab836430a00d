/**
 * A thread that places routed objects as the engine's thread does, minus the engine (placing-worker.ts): the
 * time from the first request to every object's layer 0 placed there says when a layer-gated question could start.
 */
import { MessageChannel, Worker, type MessagePort } from 'node:worker_threads';
import { KdnError } from '../../common/errors.ts';
import { isRoutable } from '../../engine-adapter/worker/routed-stream.ts';
import type { KVHeader, KVObjectReader } from '../../storage/kv-object/types.ts';

/** The order blocks are placed in: the lowest layer first (Session's), or each object's as they come. */
export type PlacingOrder = 'layer' | 'arrival';

export interface PlaceRequest {
  order: PlacingOrder;
  streams: { header: KVHeader; port: MessagePort }[];
}

/** performance.timeOrigin + performance.now() on the placing thread. */
export interface Placed {
  layer0AtEpoch: number;
  placedAtEpoch: number;
  /** Blocks placed. */
  blocks: number;
}

export type PlacingReply = { ok: true; placed: Placed } | { ok: false; message: string };

export class PlacingThread {
  private readonly worker: Worker;

  /**
   * `blockCostUs`: the thread stays busy this long more per block placed, standing in for the engine thread's other
   * work per block (expansion records, submissions, Dawn's events), so that it can fall behind its fetch threads.
   */
  constructor(blockCostUs = 0) {
    this.worker = new Worker(new URL('./placing-worker.js', import.meta.url), { workerData: { blockCostUs } });
  }

  /** Routes `readers` to the thread and places them there; resolves with when (on this thread's clock). */
  async place(readers: readonly KVObjectReader[], order: PlacingOrder): Promise<{ layer0At: number; placedAt: number; blocks: number }> {
    const streams = readers.map((reader) => {
      const { port1, port2 } = new MessageChannel();
      if (!isRoutable(reader) || !reader.route(port2)) throw new KdnError('INTERNAL', 'a fetched object could not be routed');
      return { header: reader.header, port: port1 };
    });
    const reply = new Promise<PlacingReply>((resolve) => this.worker.once('message', resolve));
    this.worker.postMessage(
      { order, streams } satisfies PlaceRequest,
      streams.map((s) => s.port),
    );
    const answer = await reply;
    if (!answer.ok) throw new KdnError('INTERNAL', `placing failed: ${answer.message}`);
    const local = (epoch: number): number => epoch - performance.timeOrigin;
    return { layer0At: local(answer.placed.layer0AtEpoch), placedAt: local(answer.placed.placedAtEpoch), blocks: answer.placed.blocks };
  }

  async close(): Promise<void> {
    await this.worker.terminate();
  }
}
