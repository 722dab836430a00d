import { expect } from 'chai';
import { MessageChannel, type MessagePort } from 'node:worker_threads';
import { BlockChannel } from '../../engine-adapter/worker/block-channel.ts';
import type { ReturnedBuffers, RoutedBlocks } from '../../engine-adapter/worker/routed-stream.ts';
import type { KVLayerBlock } from '../../storage/kv-object/types.ts';
import { encodedLayers } from './kv-readers.ts';

const SHAPE = { layers: 4, kvHeads: 2, headDim: 8, tokens: 6 };

/** Layers `from`..`to` (exclusive) in one buffer of their own, as a fetch thread's step sends them. */
function inOneBuffer(layers: Uint8Array[], from: number, to: number): { layer: number; bytes: Uint8Array }[] {
  const buffer = new ArrayBuffer(layers.slice(from, to).reduce((n, l) => n + l.length, 0));
  let at = 0;
  return layers.slice(from, to).map((l, i) => {
    const bytes = new Uint8Array(buffer, at, l.length);
    bytes.set(l);
    at += l.length;
    return { layer: from + i, bytes };
  });
}

/** Collects what the engine's side sends back on the fetch thread's end. */
function returns(port: MessagePort): ArrayBuffer[][] {
  const got: ArrayBuffer[][] = [];
  port.on('message', (m: ReturnedBuffers) => got.push(m.buffers));
  return got;
}

const turn = (): Promise<void> => new Promise((resolve) => setTimeout(resolve, 20));

describe('BlockChannel: blocks routed to the engine thread', () => {
  it('sends a buffer back once the session took past every block in it, before the stream ends', async () => {
    const { header, layers } = await encodedLayers(SHAPE, 3);
    const { port1: engineEnd, port2: fetchEnd } = new MessageChannel();
    const back = returns(fetchEnd);
    const channel = new BlockChannel(header);
    channel.listen(engineEnd);
    const first = inOneBuffer(layers, 0, 2);
    const second = inOneBuffer(layers, 2, 4);
    const sizes = [first[0]!.bytes.buffer.byteLength, second[0]!.bytes.buffer.byteLength];
    fetchEnd.postMessage({ type: 'blocks', blocks: first } satisfies RoutedBlocks, [first[0]!.bytes.buffer as ArrayBuffer]);
    fetchEnd.postMessage({ type: 'blocks', blocks: second } satisfies RoutedBlocks, [second[0]!.bytes.buffer as ArrayBuffer]);

    const it = channel.reader.layers[Symbol.asyncIterator]();
    const taken: KVLayerBlock[] = [];
    taken.push((await it.next()).value as KVLayerBlock);
    taken.push((await it.next()).value as KVLayerBlock);
    await turn();
    expect(back, 'layer 1 is still being written').to.have.length(0);
    expect(Array.from(taken[1]!.encoded)).to.deep.equal(Array.from(layers[1]!));
    taken.push((await it.next()).value as KVLayerBlock);
    await turn();
    expect(back.flat().map((b) => b.byteLength)).to.deep.equal([sizes[0]]);
    expect(taken[0]!.encoded.byteLength, 'the buffer went back, so its views are detached').to.equal(0);

    taken.push((await it.next()).value as KVLayerBlock);
    channel.close();
    await turn();
    expect(
      back.flat().map((b) => b.byteLength),
      'layer 3 was never taken past: its buffer stays',
    ).to.deep.equal([sizes[0]]);
    fetchEnd.close();
  });

  it('sends back the buffers taken past when the stream ends, then closes the port', async () => {
    const { header, layers } = await encodedLayers(SHAPE, 3);
    const { port1: engineEnd, port2: fetchEnd } = new MessageChannel();
    const back = returns(fetchEnd);
    const closed = new Promise<void>((resolve) => fetchEnd.once('close', () => resolve()));
    const channel = new BlockChannel(header);
    channel.listen(engineEnd);
    for (let l = 0; l < SHAPE.layers; l++) {
      const blocks = inOneBuffer(layers, l, l + 1);
      fetchEnd.postMessage({ type: 'blocks', blocks } satisfies RoutedBlocks, [blocks[0]!.bytes.buffer as ArrayBuffer]);
    }
    fetchEnd.postMessage({ type: 'end' } satisfies RoutedBlocks);
    let count = 0;
    for await (const block of channel.reader.layers) {
      expect(Array.from(block.encoded!)).to.deep.equal(Array.from(layers[count]!));
      count++;
    }
    channel.close();
    await closed;
    expect(count).to.equal(SHAPE.layers);
    expect(back.flat()).to.have.length(SHAPE.layers);
  });

  it('counts blocks with bytes as verified on arrival, announced ones only as the fetch thread says', async () => {
    const { header, layers } = await encodedLayers(SHAPE, 3);
    const { port1: engineEnd, port2: fetchEnd } = new MessageChannel();
    const channel = new BlockChannel(header);
    channel.listen(engineEnd);
    const verification = channel.reader.verification!;
    const seen: number[] = [];
    verification.onAdvance(() => seen.push(verification.through));
    const first = inOneBuffer(layers, 0, 1);
    fetchEnd.postMessage({ type: 'blocks', blocks: first } satisfies RoutedBlocks, [first[0]!.bytes.buffer as ArrayBuffer]);
    const source = (layer: number) => ({ path: '/shm/object', identity: '1:2:3:4', position: 100 * layer, length: 100 });
    const announced = [1, 2, 3].map((layer) => ({ layer, source: source(layer), announced: true as const }));
    fetchEnd.postMessage({ type: 'blocks', blocks: announced } satisfies RoutedBlocks);
    await turn();
    expect(verification.through, 'announced blocks are not verified yet').to.equal(1);
    fetchEnd.postMessage({ type: 'verified', through: 3 } satisfies RoutedBlocks);
    fetchEnd.postMessage({ type: 'verified', through: 2 } satisfies RoutedBlocks);
    fetchEnd.postMessage({ type: 'verified', through: 4 } satisfies RoutedBlocks);
    fetchEnd.postMessage({ type: 'end' } satisfies RoutedBlocks);
    const got: number[] = [];
    for await (const block of channel.reader.layers) got.push(block.layer);
    expect(got).to.deep.equal([0, 1, 2, 3]);
    expect(seen, 'only ever growing').to.deep.equal([1, 3, 4]);
    channel.close();
    fetchEnd.close();
  });
});
