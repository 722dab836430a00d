import { expect } from 'chai';
import { MessageChannel, type MessagePort } from 'node:worker_threads';
import type { RoutedBlocks } from '../../engine-adapter/worker/routed-stream.ts';
import { HandOverWindow } from '../../kdn/query/hand-over-window.ts';

const MiB = 2 ** 20;

/** The engine's end of a routed port: what came, in order. */
class EngineEnd {
  readonly got: RoutedBlocks[] = [];
  constructor(readonly port: MessagePort) {
    port.on('message', (m: RoutedBlocks) => this.got.push(m));
  }
  layers(): (number | string)[] {
    return this.got.flatMap((m): (number | string)[] => (m.type === 'blocks' ? m.blocks.map((b) => b.layer) : [m.type]));
  }
}

function blocks(layer: number, bytes: number): { message: RoutedBlocks; buffers: ArrayBuffer[] } {
  const buffer = new ArrayBuffer(bytes);
  return { message: { type: 'blocks', blocks: [{ layer, bytes: new Uint8Array(buffer) }] }, buffers: [buffer] };
}

const settle = (): Promise<void> => new Promise((resolve) => setTimeout(resolve, 20));

describe('HandOverWindow: the bytes a fetch thread has out on the engine ports', () => {
  const channels: MessageChannel[] = [];
  const open = (): { fetch: MessagePort; engine: EngineEnd } => {
    const c = new MessageChannel();
    channels.push(c);
    return { fetch: c.port1, engine: new EngineEnd(c.port2) };
  };
  afterEach(() => {
    for (const c of channels.splice(0)) {
      c.port1.close();
      c.port2.close();
    }
  });

  it('holds messages past its cap, in the order sent, until buffers come back; a message larger than the cap goes alone', async () => {
    const window = new HandOverWindow(3 * MiB);
    const { fetch, engine } = open();
    for (let layer = 0; layer < 3; layer++) {
      const { message, buffers } = blocks(layer, 2 * MiB);
      window.send(fetch, message, buffers);
    }
    window.send(fetch, { type: 'end' });
    await settle();
    expect(engine.layers()).to.deep.equal([0]);
    expect(window.bytesOut).to.equal(2 * MiB);

    const first = engine.got[0] as Extract<RoutedBlocks, { type: 'blocks' }>;
    window.returned(fetch, [first.blocks[0]!.bytes!.buffer as ArrayBuffer]);
    await settle();
    expect(engine.layers()).to.deep.equal([0, 1]);
    window.returned(fetch, [new ArrayBuffer(2 * MiB)]);
    await settle();
    expect(engine.layers()).to.deep.equal([0, 1, 2, 'end']);

    const big = new HandOverWindow(1 * MiB);
    const other = open();
    const { message, buffers } = blocks(0, 4 * MiB);
    big.send(other.fetch, message, buffers);
    await settle();
    expect(other.engine.layers()).to.deep.equal([0]);
    expect(big.bytesOut).to.equal(4 * MiB);
  });

  it('a closed port gives its bytes up and drops what waits for it; other ports go on', async () => {
    const window = new HandOverWindow(2 * MiB);
    const a = open();
    const b = open();
    for (const [port, layer] of [
      [a.fetch, 0],
      [b.fetch, 0],
      [a.fetch, 1],
      [b.fetch, 1],
    ] as const) {
      const { message, buffers } = blocks(layer, 2 * MiB);
      window.send(port, message, buffers);
    }
    await settle();
    expect(a.engine.layers()).to.deep.equal([0]);
    expect(b.engine.layers()).to.deep.equal([]);

    window.closed(a.fetch);
    await settle();
    expect(window.bytesOut).to.equal(2 * MiB);
    expect(b.engine.layers()).to.deep.equal([0]);
    window.send(a.fetch, { type: 'end' });
    window.returned(b.fetch, [new ArrayBuffer(2 * MiB)]);
    await settle();
    expect(a.engine.layers()).to.deep.equal([0]);
    expect(b.engine.layers()).to.deep.equal([0, 1]);
  });

  it('with no cap, every message goes at once', async () => {
    const window = new HandOverWindow(0);
    const { fetch, engine } = open();
    for (let layer = 0; layer < 4; layer++) {
      const { message, buffers } = blocks(layer, 8 * MiB);
      window.send(fetch, message, buffers);
    }
    await settle();
    expect(engine.layers()).to.deep.equal([0, 1, 2, 3]);
  });
});
