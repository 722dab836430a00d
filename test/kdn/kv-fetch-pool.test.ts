import { expect } from 'chai';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout } from 'node:timers/promises';
import { MessageChannel } from 'node:worker_threads';
import { EdgeClient } from '../../edge/client/client.ts';
import { startEdge, type RunningEdge } from '../../edge/server/main.ts';
import { BlockChannel } from '../../engine-adapter/worker/block-channel.ts';
import { isRoutable } from '../../engine-adapter/worker/routed-stream.ts';
import { KvFetchPool } from '../../kdn/query/kv-fetch-pool.ts';
import { defaultFetchThreads, inThreadFetcher, type KvFetcher } from '../../kdn/query/kv-fetcher.ts';
import type { PoolReader } from '../../kdn/query/pool-transfer.ts';
import { codecFromString, encodeKVObject, readKVHeader, tokenHash } from '../../storage/kv-object/index.ts';
import type { KVExpectation, KVLayerBlock } from '../../storage/kv-object/types.ts';
import { kvTensors, tokenIds } from '../../fixtures/kv-data.ts';
import { TEST_EDGE_SECRET } from '../edge/helpers.ts';
import { startFlippingProxy } from './support/flipping-proxy.ts';

const SHAPE = { layers: 4, kvHeads: 2, headDim: 64, tokens: 300 };
const IDS = tokenIds(SHAPE.tokens);
const EXPECT: KVExpectation = { modelFingerprint: 'pool-test', ...SHAPE, tokenHash: tokenHash(IDS) };

async function drain(
  fetcher: KvFetcher,
  key: string,
  expect: KVExpectation = EXPECT,
  signal = new AbortController().signal,
): Promise<KVLayerBlock[]> {
  const got = await fetcher.open(key, expect, signal);
  const blocks: KVLayerBlock[] = [];
  for await (const block of got.reader.layers) blocks.push(block);
  return blocks;
}

async function code(p: Promise<unknown>): Promise<string> {
  return p.then(
    () => 'resolved',
    (e: { code?: string }) => e.code ?? String(e),
  );
}

describe('defaultFetchThreads', () => {
  it('all cores but four or half of them, whichever is more, at most 12 and none on one core', () => {
    const byCores = [1, 2, 4, 8, 12, 16, 32, 128].map((cores) => defaultFetchThreads(cores));
    expect(byCores).to.deep.equal([0, 1, 2, 4, 8, 12, 12, 12]);
  });
});

describe('KvFetchPool: chunk objects received and verified on worker threads', () => {
  let dir: string;
  let edge: RunningEdge;
  let client: EdgeClient;
  let pool: KvFetchPool;
  const objects = new Map<string, Buffer>();

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'kdn-fetch-pool-'));
    edge = await startEdge({
      port: 0,
      diskPath: join(dir, 'disk'),
      memoryBytes: '64MiB',
      diskBytes: 0,
      originUrl: `file:${join(dir, 'origin')}`,
      secret: TEST_EDGE_SECRET,
    });
    const options = { edges: [edge.url], timeoutMs: 5_000, secret: TEST_EDGE_SECRET };
    client = new EdgeClient(options);
    pool = new KvFetchPool(options, 2);
    for (const codec of ['fp16', 'int4+lz4']) {
      const bytes = encodeKVObject(kvTensors(SHAPE, 3), { modelFingerprint: 'pool-test', tokenIds: IDS, codec: codecFromString(codec) });
      objects.set(codec, bytes);
      await client.put(`kv/pool/${codec.replace('+', '-')}.kv`, bytes);
    }
  });
  after(async () => {
    await pool?.close();
    client?.close();
    await edge?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  for (const codec of ['fp16', 'int4+lz4']) {
    it(`hands over the same verified layers as the event-loop fetcher (${codec}), decodable on this thread`, async () => {
      const [fromPool, fromLoop] = await Promise.all([
        drain(pool, `kv/pool/${codec.replace('+', '-')}.kv`),
        drain(inThreadFetcher(client), `kv/pool/${codec.replace('+', '-')}.kv`),
      ]);
      expect(fromPool.map((b) => b.layer)).to.deep.equal([0, 1, 2, 3]);
      fromPool.forEach((b, l) => {
        expect(Buffer.from(b.encoded).equals(Buffer.from(fromLoop[l]!.encoded))).to.equal(true);
        expect(b.decode().keys).to.deep.equal(fromLoop[l]!.decode().keys);
      });
    });
  }

  it('small objects (layer blocks of a few KB, several per socket chunk) arrive intact', async () => {
    const small = { layers: 8, kvHeads: 2, headDim: 64, tokens: 24 };
    const ids = tokenIds(small.tokens);
    const bytes = encodeKVObject(kvTensors(small, 5), { modelFingerprint: 'pool-test', tokenIds: ids, codec: codecFromString('fp16') });
    await client.put('kv/pool/small.kv', bytes);
    const expect_: KVExpectation = { modelFingerprint: 'pool-test', ...small, tokenHash: tokenHash(ids) };
    for (let i = 0; i < 5; i++) {
      const [fromPool, fromLoop] = await Promise.all([
        drain(pool, 'kv/pool/small.kv', expect_),
        drain(inThreadFetcher(client), 'kv/pool/small.kv', expect_),
      ]);
      expect(fromPool.map((b) => Buffer.from(b.encoded).toString('hex'))).to.deep.equal(
        fromLoop.map((b) => Buffer.from(b.encoded).toString('hex')),
      );
    }
  });

  it('assembles blocks larger than a socket chunk in receive buffers, later ones in those sent back after injection', async () => {
    // Routed to a channel on this thread as to the engine's, which sends each block's buffer back once it is read;
    // with the spool off, as a spooled block's buffer is the fetch thread's again at once (receive-spool.ts).
    const pool = new KvFetchPool({ edges: [edge.url], timeoutMs: 5_000, secret: TEST_EDGE_SECRET }, 2, { spoolBytes: 0 });
    try {
      await receiveRounds(pool, objects.get('fp16')!);
    } finally {
      await pool.close();
    }
  });

  it('serves many objects at once over its threads', async () => {
    const all = await Promise.all(Array.from({ length: 12 }, (_, i) => drain(pool, `kv/pool/${i % 2 ? 'fp16' : 'int4-lz4'}.kv`)));
    expect(all.every((blocks) => blocks.length === SHAPE.layers)).to.equal(true);
  });

  it('a layer damaged in transit fails the read with KV_CORRUPT, never yielding it (at most the layers before it)', async () => {
    // The edge holds a good object; a proxy between it and the workers flips a byte of the last layer.
    const proxy = await startFlippingProxy(edge.url, objects.get('fp16')!.length - 10);
    const damagedPool = new KvFetchPool({ edges: [proxy.url], timeoutMs: 5_000, secret: TEST_EDGE_SECRET }, 1);
    try {
      const got = await damagedPool.open('kv/pool/fp16.kv', EXPECT, new AbortController().signal);
      const seen: number[] = [];
      const err = await (async () => {
        for await (const block of got.reader.layers) seen.push(block.layer);
      })().catch((e: { code?: string }) => e.code);
      expect(err).to.equal('KV_CORRUPT');
      // Blocks still held on the worker when the object failed are dropped with it.
      expect(seen).to.deep.equal([0, 1, 2].slice(0, seen.length));
    } finally {
      await damagedPool.close();
      await proxy.close();
    }
  });

  it('keeps an arrived object on its worker until its layers are read, and drops it once its signal fires', async () => {
    const layersOf = async (reader: AsyncIterable<KVLayerBlock>): Promise<number[]> => {
      const seen: number[] = [];
      for await (const block of reader) seen.push(block.layer);
      return seen;
    };
    const kept = await pool.open('kv/pool/fp16.kv', EXPECT, new AbortController().signal);
    await kept.reader.drained;
    expect(await layersOf(kept.reader.layers)).to.deep.equal([0, 1, 2, 3]);
    const abort = new AbortController();
    const dropped = await pool.open('kv/pool/fp16.kv', EXPECT, abort.signal);
    await dropped.reader.drained;
    abort.abort();
    expect(await code(layersOf(dropped.reader.layers))).to.equal('TIMEOUT');
  });

  it('delivers eagerly: blocks reach the event loop before the reader is read, and the reader cannot be routed', async () => {
    const eager = new KvFetchPool({ edges: [edge.url], timeoutMs: 5_000, secret: TEST_EDGE_SECRET }, 1, { deliverEagerly: true });
    try {
      const got = await eager.open('kv/pool/fp16.kv', EXPECT, new AbortController().signal);
      await got.reader.drained;
      // Nothing has read the layers yet: held on the worker, they would not have been counted here.
      expect(eager.deliveredBytes).to.be.greaterThan(0);
      const { port1, port2 } = new MessageChannel();
      expect((got.reader as PoolReader).route(port1)).to.equal(false);
      port1.close();
      port2.close();
      const blocks: KVLayerBlock[] = [];
      for await (const block of got.reader.layers) blocks.push(block);
      const fromLoop = await drain(inThreadFetcher(client), 'kv/pool/fp16.kv');
      expect(blocks.map((b) => Buffer.from(b.encoded).toString('hex'))).to.deep.equal(
        fromLoop.map((b) => Buffer.from(b.encoded).toString('hex')),
      );
    } finally {
      await eager.close();
    }
  });

  it('closing the pool fails what is in flight instead of leaving it hanging', async () => {
    const closing = new KvFetchPool({ edges: [edge.url], timeoutMs: 5_000, secret: TEST_EDGE_SECRET }, 1);
    const pending = drain(closing, 'kv/pool/fp16.kv');
    await closing.close();
    expect(await code(pending)).to.equal('EDGE_UNAVAILABLE');
    expect(await code(closing.open('kv/pool/fp16.kv', EXPECT, new AbortController().signal))).to.equal('INTERNAL');
  });

  it('a missing key is NOT_FOUND, a mismatched expectation KV_MISMATCH, an abort rejects', async () => {
    expect(await code(pool.open('kv/pool/missing.kv', EXPECT, new AbortController().signal))).to.equal('NOT_FOUND');
    expect(await code(pool.open('kv/pool/fp16.kv', { ...EXPECT, modelFingerprint: 'other' }, new AbortController().signal))).to.equal(
      'KV_MISMATCH',
    );
    const aborted = new AbortController();
    aborted.abort();
    expect(await code(drain(pool, 'kv/pool/fp16.kv', EXPECT, aborted.signal))).to.not.equal('resolved');
  });
});

/**
 * Four rounds of the fp16 object (`object`, as stored) routed to a channel on this thread: intact each time, and
 * received into the buffers the channel sent back.
 */
async function receiveRounds(pool: KvFetchPool, object: Uint8Array): Promise<void> {
  const receive = async (): Promise<Buffer> => {
    const { reader } = await pool.open('kv/pool/fp16.kv', EXPECT, new AbortController().signal);
    const { port1, port2 } = new MessageChannel();
    expect(isRoutable(reader) && reader.route(port2)).to.equal(true);
    const channel = new BlockChannel(reader.header);
    channel.listen(port1);
    const layers: Buffer[] = [];
    for await (const block of channel.reader.layers) layers.push(Buffer.from(block.encoded!));
    channel.close();
    return Buffer.concat(layers);
  };
  // fp16 blocks are stored as they are encoded: the object's tail, layer after layer.
  const payload = object.subarray(object.length - readKVHeader(object).layerOffsets[SHAPE.layers]!);
  const start = pool.receiveBuffers;
  const since = () => ({
    fresh: pool.receiveBuffers.freshBytes - start.freshBytes,
    reused: pool.receiveBuffers.reusedBytes - start.reusedBytes,
  });
  const rounds = 4;
  for (let i = 0; i < rounds; i++) expect((await receive()).equals(payload), `object ${i}`).to.equal(true);
  for (let i = 0; i < 200 && since().fresh + since().reused < rounds * payload.length; i++) await setTimeout(10);
  expect(since().fresh + since().reused, JSON.stringify(since())).to.equal(rounds * payload.length);
  // Which buffer a block lands in depends on when the buffers come back, but objects after the first find some.
  expect(since().reused, JSON.stringify(since())).to.be.at.least(payload.length);
}
