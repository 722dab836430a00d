import { expect } from 'chai';
import { MessageChannel, type MessagePort } from 'node:worker_threads';
import type { RoutedBlocks } from '../../engine-adapter/worker/routed-stream.ts';
import { BlockOutlet, type OutletBlock } from '../../kdn/query/block-outlet.ts';
import { HandOverWindow } from '../../kdn/query/hand-over-window.ts';
import type { FromWorker } from '../../kdn/query/kv-fetch-protocol.ts';
import type { KVBlockSource } from '../../storage/kv-object/types.ts';

const source = (layer: number): KVBlockSource => ({ path: '/shm/object', identity: '1:2:3:4', position: 100 * layer, length: 100 });

/** Two blocks sharing one buffer, both read from a file; one lz4 block (decompressed: no source) in its own. */
function blocks(): { fromFile: OutletBlock[]; own: OutletBlock } {
  const shared = new Uint8Array(200).fill(7);
  return {
    fromFile: [0, 1].map((layer) => ({ layer, bytes: shared.subarray(100 * layer, 100 * (layer + 1)), source: source(layer) })),
    own: { layer: 2, bytes: new Uint8Array(100).fill(9) },
  };
}

class Outlet {
  readonly posted: FromWorker[] = [];
  readonly recycled: ArrayBuffer[] = [];
  readonly routed: RoutedBlocks[] = [];
  readonly outlet = new BlockOutlet(
    1,
    (message) => this.posted.push(message),
    new HandOverWindow(0),
    (buffer) => this.recycled.push(buffer),
  );
  private readonly channel = new MessageChannel();

  constructor() {
    this.channel.port1.on('message', (message: RoutedBlocks) => this.routed.push(message));
  }

  get port(): MessagePort {
    return this.channel.port2;
  }

  /** Every message routed so far, once they crossed the port. */
  async received(count: number): Promise<RoutedBlocks[]> {
    for (let i = 0; i < 100 && this.routed.length < count; i++) await new Promise((resolve) => setTimeout(resolve, 5));
    return this.routed;
  }

  close(): void {
    this.channel.port1.close();
  }
}

describe('BlockOutlet: where a fetch thread sends verified blocks', () => {
  it('routes blocks read from a file as where they lie, recycling their buffer; others go with their bytes', async () => {
    const o = new Outlet();
    try {
      const { fromFile, own } = blocks();
      const fileBuffer = fromFile[0]!.bytes.buffer;
      o.outlet.route(o.port);
      o.outlet.add([...fromFile, own], 300);
      o.outlet.end(300);
      const [sent, end] = await o.received(2);
      expect(end).to.deep.equal({ type: 'end' });
      const routed = (sent as Extract<RoutedBlocks, { type: 'blocks' }>).blocks;
      expect(routed.slice(0, 2)).to.deep.equal([
        { layer: 0, source: source(0) },
        { layer: 1, source: source(1) },
      ]);
      expect(routed[2]!.layer).to.equal(2);
      expect([...routed[2]!.bytes!]).to.deep.equal(new Array(100).fill(9));
      // The file's blocks' buffer stays here, to be read into again; the other one was transferred.
      expect(o.recycled).to.deep.equal([fileBuffer]);
      expect(fileBuffer.byteLength).to.equal(200);
      expect(own.bytes.buffer.byteLength).to.equal(0);
    } finally {
      o.close();
    }
  });

  it('holds blocks with their bytes until routed, then sends them the same way', async () => {
    const o = new Outlet();
    try {
      const { fromFile } = blocks();
      o.outlet.add(fromFile, 200);
      expect(o.recycled).to.deep.equal([]);
      o.outlet.route(o.port);
      const [sent] = await o.received(1);
      expect((sent as Extract<RoutedBlocks, { type: 'blocks' }>).blocks).to.deep.equal([
        { layer: 0, source: source(0) },
        { layer: 1, source: source(1) },
      ]);
      expect(o.recycled).to.deep.equal([fromFile[0]!.bytes.buffer]);
    } finally {
      o.close();
    }
  });

  it('holds what the blocks need open until the engine closes its port; at once for the pool, or when dropped', async () => {
    const routed = new Outlet();
    const closed: string[] = [];
    routed.outlet.route(routed.port);
    routed.outlet.holdOpen(() => closed.push('routed'));
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(closed).to.deep.equal([]);
    routed.close();
    for (let i = 0; i < 100 && closed.length === 0; i++) await new Promise((resolve) => setTimeout(resolve, 5));
    expect(closed).to.deep.equal(['routed']);
    // Held after the engine's side closed: let go at once.
    routed.outlet.holdOpen(() => closed.push('late'));
    expect(closed).to.deep.equal(['routed', 'late']);

    const pooled = new Outlet();
    pooled.outlet.holdOpen(() => closed.push('before delivery'));
    pooled.outlet.deliver();
    pooled.outlet.holdOpen(() => closed.push('delivered'));
    const dropped = new Outlet();
    dropped.outlet.holdOpen(() => closed.push('dropped'));
    dropped.outlet.drop();
    expect(closed.slice(2)).to.deep.equal(['before delivery', 'delivered', 'dropped']);
    pooled.close();
    dropped.close();
  });

  it('delivers blocks to the pool with their bytes and sources, recycling nothing', () => {
    const o = new Outlet();
    try {
      const { fromFile } = blocks();
      o.outlet.deliver();
      o.outlet.add(fromFile, 200);
      const layers = o.posted.find((m) => m.type === 'layers') as Extract<FromWorker, { type: 'layers' }>;
      expect(layers.layers.map((b) => [b.layer, b.bytes.length, b.source])).to.deep.equal([
        [0, 100, source(0)],
        [1, 100, source(1)],
      ]);
      expect(o.recycled).to.deep.equal([]);
    } finally {
      o.close();
    }
  });

  describe('announced objects (verified alongside the engine)', () => {
    const announced = [0, 1, 2].map((layer) => ({ layer, source: source(layer), announced: true }));

    it('sends every layer as where it lies before any is verified, then only how far verification got', async () => {
      const o = new Outlet();
      try {
        o.outlet.route(o.port);
        o.outlet.announce([0, 1, 2].map(source));
        const { fromFile } = blocks();
        o.outlet.add(fromFile, 200);
        o.outlet.add([{ layer: 2, bytes: new Uint8Array(100), source: source(2) }], 300);
        o.outlet.end(300);
        expect(await o.received(4)).to.deep.equal([
          { type: 'blocks', blocks: announced },
          { type: 'verified', through: 2 },
          { type: 'verified', through: 3 },
          { type: 'end' },
        ]);
        // No bytes went: every buffer stays to be read into again.
        expect(o.recycled).to.have.length(2);
        expect(o.outlet.withdrawAnnouncement()).to.equal(false);
      } finally {
        o.close();
      }
    });

    it('holds the announcement until routed, and then says how far the blocks verified meanwhile go', async () => {
      const o = new Outlet();
      try {
        o.outlet.announce([0, 1, 2].map(source));
        o.outlet.add(blocks().fromFile, 200);
        o.outlet.route(o.port);
        expect(await o.received(2)).to.deep.equal([
          { type: 'blocks', blocks: announced },
          { type: 'verified', through: 2 },
        ]);
      } finally {
        o.close();
      }
    });

    it('an announcement withdrawn before routing, or an object the pool reads, goes as verified blocks', async () => {
      const withdrawn = new Outlet();
      const pooled = new Outlet();
      try {
        withdrawn.outlet.announce([0, 1, 2].map(source));
        expect(withdrawn.outlet.withdrawAnnouncement()).to.equal(true);
        withdrawn.outlet.add(blocks().fromFile, 200);
        withdrawn.outlet.route(withdrawn.port);
        const [sent] = await withdrawn.received(1);
        expect(sent).to.deep.equal({ type: 'blocks', blocks: [0, 1].map((layer) => ({ layer, source: source(layer) })) });

        pooled.outlet.announce([0, 1, 2].map(source));
        pooled.outlet.deliver();
        pooled.outlet.add(blocks().fromFile, 200);
        const layers = pooled.posted.filter((m) => m.type === 'layers') as Extract<FromWorker, { type: 'layers' }>[];
        expect(layers.flatMap((m) => m.layers.map((b) => [b.layer, b.bytes.length]))).to.deep.equal([
          [0, 100],
          [1, 100],
        ]);
      } finally {
        withdrawn.close();
        pooled.close();
      }
    });
  });
});
