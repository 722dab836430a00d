import { KdnError } from '../common/errors.ts';
import type { KVBlock } from '../storage/kv-object/types.ts';

/**
 * How long blocks are written back to back before the thread goes back to its event loop, so that blocks queued on
 * other ports come in and can go first.
 */
const YIELD_MS = 1;

/** Where writeInLayerOrder's blocks go. Either may throw, which ends the writing with that error. */
export interface LayerSink {
  /** Writes stream `stream`'s next block; the stream is asked for its following block once this resolves. */
  write(stream: number, block: KVBlock): Promise<void>;
  /** Stream `stream` ended. */
  ended(stream: number): void;
}

/**
 * Writes the blocks of several KV streams as they arrive, the lowest layer first among the blocks that have arrived,
 * for a forward that runs layer l once every stream's layer l is written (layer-gates.ts).
 *
 * Written in arrival order, the last object's layer 0 went in after most of the context, and the forward waited for
 * it: blocks of different objects reach the engine's thread on different MessagePorts, and Node delivers every queued
 * message of one port before the next port's, so a thread behind its fetch threads saw the objects one after another
 * whatever order they were sent in. Taking the lowest layer first, and going back to the event loop every YIELD_MS to
 * let the other ports' blocks in, puts layer 0 of every object first.
 *
 * A stream is asked for its next block only once the one before is written (a block's buffer may go back to its
 * sender then, engine-adapter/worker/block-channel.ts). Resolves with the milliseconds it waited with no block at hand
 * while streams were open: beside how long the writing took, they say whether the blocks' arrival or the thread's
 * own work held it up. Rejects with the first failure: a stream's, the sink's, or KdnError INTERNAL once `stop`
 * resolves.
 */
export async function writeInLayerOrder(streams: readonly AsyncIterator<KVBlock>[], sink: LayerSink, stop: Promise<void>): Promise<number> {
  const heads: (KVBlock | undefined)[] = new Array(streams.length).fill(undefined);
  let open = streams.length;
  let failure: { error: unknown } | undefined;
  let wake: (() => void) | undefined;
  const rouse = (): void => {
    wake?.();
    wake = undefined;
  };
  const fail = (error: unknown): void => {
    failure ??= { error };
    rouse();
  };
  void stop.then(() => fail(new KdnError('INTERNAL', 'placing stopped: the forward failed')));
  const pull = (i: number): void => {
    streams[i]!.next()
      .then((got) => {
        if (got.done) {
          open--;
          sink.ended(i);
        } else heads[i] = got.value;
        rouse();
      }, fail)
      .catch(fail);
  };
  streams.forEach((_, i) => pull(i));
  let since = performance.now();
  let waited = 0;
  for (;;) {
    if (failure) throw failure.error;
    const i = lowestLayer(heads);
    if (i === -1) {
      if (open === 0) return waited;
      const began = performance.now();
      await new Promise<void>((resolve) => (wake = resolve));
      since = performance.now();
      waited += since - began;
      continue;
    }
    const block = heads[i]!;
    heads[i] = undefined;
    await sink.write(i, block);
    pull(i);
    if (performance.now() - since > YIELD_MS) {
      await new Promise((resolve) => setImmediate(resolve));
      since = performance.now();
    }
  }
}

/** The index of the block with the lowest layer, or -1 when there is none. */
function lowestLayer(heads: readonly (KVBlock | undefined)[]): number {
  let best = -1;
  for (let i = 0; i < heads.length; i++) {
    const block = heads[i];
    if (block !== undefined && (best === -1 || block.layer < heads[best]!.layer)) best = i;
  }
  return best;
}
