import { expect } from 'chai';
import { MessageChannel } from 'node:worker_threads';
import { KdnError } from '../../common/errors.ts';
import { writeInLayerOrder, type LayerSink } from '../../engine-adapter/layer-order.ts';
import { BlockChannel } from '../../engine-adapter/worker/block-channel.ts';
import type { RoutedBlocks } from '../../engine-adapter/worker/routed-stream.ts';
import type { KVLayerBlock } from '../../storage/kv-object/types.ts';
import { encodedLayers } from './kv-readers.ts';

const SHAPE = { layers: 4, kvHeads: 2, headDim: 8, tokens: 6 };

/** Streams of blocks that are all there from the start (`layers` blocks each, or those given). */
function ready(counts: number[]): AsyncIterator<KVLayerBlock>[] {
  return counts.map((n) =>
    (async function* () {
      for (let layer = 0; layer < n; layer++) yield { layer, encoded: new Uint8Array(4) } as KVLayerBlock;
    })(),
  );
}

/** A sink that records `stream:layer` per write, spending `busyMs` of this thread on each as a staging copy does. */
function recording(busyMs = 0): LayerSink & { order: string[]; ended: (stream: number) => void; ends: number[] } {
  const order: string[] = [];
  const ends: number[] = [];
  return {
    order,
    ends,
    write: async (stream, block) => {
      const until = performance.now() + busyMs;
      while (performance.now() < until);
      order.push(`${stream}:${block.layer}`);
    },
    ended: (stream) => void ends.push(stream),
  };
}

const never = new Promise<void>(() => {});

describe('writeInLayerOrder: placing several objects for a layer-gated forward', () => {
  it('writes layer 0 of every object first when one port delivered all of its object before the next', async () => {
    const objects = [await encodedLayers(SHAPE, 1), await encodedLayers(SHAPE, 2)];
    const channels = objects.map(({ header, layers }) => {
      const { port1: engineEnd, port2: fetchEnd } = new MessageChannel();
      const channel = new BlockChannel(header);
      channel.listen(engineEnd);
      // Every block is queued on its port before this thread reads any: Node delivers port 0's four messages, then
      // port 1's, as it does for a thread that fell behind its fetch threads.
      for (const [layer, l] of layers.entries()) {
        const bytes = Uint8Array.from(l);
        fetchEnd.postMessage({ type: 'blocks', blocks: [{ layer, bytes }] } satisfies RoutedBlocks, [bytes.buffer]);
      }
      fetchEnd.postMessage({ type: 'end' } satisfies RoutedBlocks);
      return channel;
    });
    const sink = recording(3);
    await writeInLayerOrder(
      channels.map((c) => c.reader.layers[Symbol.asyncIterator]()),
      sink,
      never,
    );
    for (const c of channels) c.close();
    // Layer by layer, whichever object's block of a layer goes first.
    expect(sink.order.map((w) => Number(w.split(':')[1]))).to.deep.equal([0, 0, 1, 1, 2, 2, 3, 3]);
    expect([...sink.order].sort()).to.deep.equal(['0:0', '0:1', '0:2', '0:3', '1:0', '1:1', '1:2', '1:3']);
    expect(sink.ends.sort()).to.deep.equal([0, 1]);
  });

  it('takes the lowest layer among the blocks there, and every block of every stream once', async () => {
    const sink = recording();
    await writeInLayerOrder(ready([3, 1, 2]), sink, never);
    expect(sink.order).to.deep.equal(['0:0', '1:0', '2:0', '0:1', '2:1', '0:2']);
    expect(sink.ends.sort()).to.deep.equal([0, 1, 2]);
  });

  it('reports how long it waited with no block at hand: the gap a late block leaves counts, writing does not', async () => {
    const late = (async function* () {
      yield { layer: 0, encoded: new Uint8Array(4) } as KVLayerBlock;
      await new Promise((resolve) => setTimeout(resolve, 80));
      yield { layer: 1, encoded: new Uint8Array(4) } as KVLayerBlock;
    })();
    const began = performance.now();
    const waited = await writeInLayerOrder([late], recording(30), never);
    const took = performance.now() - began;
    // The second block came 80 ms after the first was taken, 30 of which went to writing the first.
    expect(waited).to.be.at.least(45);
    expect(waited).to.be.at.most(took - 55);
  });

  it("rejects with a stream's failure, the sink's, or INTERNAL once stop resolves", async () => {
    const broken = (async function* () {
      yield { layer: 0, encoded: new Uint8Array(4) } as KVLayerBlock;
      throw new KdnError('KV_CORRUPT', 'layer 1 failed its digest');
    })();
    const failed = await writeInLayerOrder([broken, ...ready([4])], recording(), never).catch((e: unknown) => e);
    expect((failed as KdnError).code).to.equal('KV_CORRUPT');

    const sink = recording();
    const refusing: LayerSink = {
      ...sink,
      ended: () => {
        throw new KdnError('KV_CORRUPT', 'ended after 2 of 4 layers');
      },
    };
    const short = await writeInLayerOrder(ready([2]), refusing, never).catch((e: unknown) => e);
    expect((short as KdnError).message).to.contain('ended after 2');

    const pending = (async function* () {
      yield { layer: 0, encoded: new Uint8Array(4) } as KVLayerBlock;
      await never;
    })();
    let stop!: () => void;
    const stopped = writeInLayerOrder([pending], recording(), new Promise<void>((resolve) => (stop = resolve))).catch((e: unknown) => e);
    setTimeout(stop, 10);
    expect(((await stopped) as KdnError).code).to.equal('INTERNAL');
  });
});
