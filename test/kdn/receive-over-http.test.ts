import { expect } from 'chai';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MessageChannel } from 'node:worker_threads';
import { EdgeClient } from '../../edge/client/client.ts';
import { startEdge, type RunningEdge } from '../../edge/server/main.ts';
import { BlockChannel } from '../../engine-adapter/worker/block-channel.ts';
import { isRoutable } from '../../engine-adapter/worker/routed-stream.ts';
import { KvFetchPool } from '../../kdn/query/kv-fetch-pool.ts';
import { codecFromString, encodeKVObject, tokenHash } from '../../storage/kv-object/index.ts';
import { kvTensors, tokenIds } from '../../fixtures/kv-data.ts';
import { TEST_EDGE_SECRET } from '../edge/helpers.ts';

/** Layer blocks of about 160 KB: each spans several of the socket's chunks. */
const SHAPE = { layers: 3, kvHeads: 4, headDim: 64, tokens: 512 };
const OBJECTS = 4;

/**
 * Over HTTP a fetch thread assembles each layer block that spans several socket chunks in a buffer of its own; once
 * the engine's thread sent those buffers back, later objects are assembled in them rather than in new ones.
 */
describe('a fetch thread receiving over HTTP into returned buffers', function () {
  this.timeout(60_000);
  let dir: string;
  let edge: RunningEdge;
  let pool: KvFetchPool;
  const keys = Array.from({ length: OBJECTS }, (_, i) => `kv/test/receive/chunk-${i}.kv`);
  const object = encodeKVObject(kvTensors(SHAPE, 7), {
    modelFingerprint: 'receive-test',
    tokenIds: tokenIds(SHAPE.tokens),
    codec: codecFromString('int4'),
  });
  const expected = { modelFingerprint: 'receive-test', ...SHAPE, tokenHash: tokenHash(tokenIds(SHAPE.tokens)) };

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'kdn-receive-'));
    edge = await startEdge({
      port: 0,
      diskPath: join(dir, 'disk'),
      memoryBytes: '64MiB',
      diskBytes: 0,
      originUrl: `file:${join(dir, 'origin')}`,
      secret: TEST_EDGE_SECRET,
    });
    const client = new EdgeClient({ edges: [edge.url], timeoutMs: 5_000, secret: TEST_EDGE_SECRET });
    for (const key of keys) await client.put(key, object);
    client.close();
    const options = { sharedMemory: false, receiveBufferBytes: 16 * 2 ** 20 };
    pool = new KvFetchPool({ edges: [edge.url], timeoutMs: 5_000, secret: TEST_EDGE_SECRET }, 1, options);
  });

  after(async () => {
    await pool?.close();
    await edge?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  /** Routes each object to a channel on this thread, as to the engine's, and reads it; returns their layers' bytes. */
  async function receive(objects: readonly string[]): Promise<Buffer[]> {
    const received: Buffer[] = [];
    for (const key of objects) {
      const { reader } = await pool.open(key, expected, new AbortController().signal);
      const { port1, port2 } = new MessageChannel();
      expect(isRoutable(reader) && reader.route(port2)).to.equal(true);
      const channel = new BlockChannel(reader.header);
      channel.listen(port1);
      const layers: Buffer[] = [];
      for await (const block of channel.reader.layers) layers.push(Buffer.from(block.encoded));
      channel.close();
      received.push(Buffer.concat(layers));
    }
    return received;
  }

  it('assembles every block in a receive buffer, and later objects in the buffers earlier ones came back in', async () => {
    const received = await receive(keys);
    // Every layer's encoded bytes, as the object stores them (int4 has no lz4 framing).
    const payload = object.subarray(object.length - received[0]!.length);
    for (const bytes of received) expect(bytes.equals(payload)).to.equal(true);
    const taken = (): number => pool.receiveBuffers.freshBytes + pool.receiveBuffers.reusedBytes;
    await until(
      () => taken() === keys.length * payload.length,
      () => JSON.stringify(pool.receiveBuffers),
    );
    const stats = pool.receiveBuffers;
    // A buffer comes back once its block is read, so some come back while their object is still arriving; which
    // buffer a block lands in depends on that timing, but the objects after the first find buffers waiting.
    expect(stats.reusedBytes, JSON.stringify(stats)).to.be.at.least(payload.length);
  });
});

async function until(done: () => boolean, what = (): string => ''): Promise<void> {
  for (let i = 0; i < 200 && !done(); i++) await new Promise((resolve) => setTimeout(resolve, 10));
  expect(done(), what()).to.equal(true);
}
