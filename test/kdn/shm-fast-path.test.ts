import { expect } from 'chai';
import { spawnSync } from 'node:child_process';
import { existsSync, statSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { EdgeClient } from '../../edge/client/client.ts';
import { SHM_IDENTITY_FILE, shmObjectName } from '../../edge/protocol.ts';
import { startEdge, type RunningEdge } from '../../edge/server/main.ts';
import { ChunkFetch } from '../../kdn/query/fetch-chunk.ts';
import { KvFetchPool } from '../../kdn/query/kv-fetch-pool.ts';
import { inThreadFetcher, type KvFetcher } from '../../kdn/query/kv-fetcher.ts';
import { ShmSource } from '../../kdn/query/shm-source.ts';
import { codecFromString, encodeKVObject, tokenHash } from '../../storage/kv-object/index.ts';
import type { KVExpectation, KVLayerBlock } from '../../storage/kv-object/types.ts';
import { kvTensors, tokenIds } from '../../fixtures/kv-data.ts';
import { TEST_EDGE_SECRET } from '../edge/helpers.ts';

const SHAPE = { layers: 4, kvHeads: 2, headDim: 64, tokens: 300 };
const IDS = tokenIds(SHAPE.tokens);
const EXPECT: KVExpectation = { modelFingerprint: 'shm-test', ...SHAPE, tokenHash: tokenHash(IDS) };

async function drain(fetcher: KvFetcher, key: string): Promise<{ from: string; blocks: KVLayerBlock[] }> {
  const got = await fetcher.open(key, EXPECT, new AbortController().signal);
  const blocks: KVLayerBlock[] = [];
  for await (const block of got.reader.layers) blocks.push(block);
  return { from: got.servedFrom, blocks };
}

function sameLayers(blocks: KVLayerBlock[], reference: KVLayerBlock[]): void {
  expect(blocks.map((b) => b.layer)).to.deep.equal(reference.map((b) => b.layer));
  for (const [l, b] of blocks.entries()) {
    expect(Buffer.from(b.encoded).equals(Buffer.from(reference[l]!.encoded)), `layer ${l}`).to.equal(true);
  }
}

describe('same-host fast path: kdn reads the edge memory tier from shared memory', function () {
  this.timeout(30_000);
  let dir: string;
  let edge: RunningEdge;
  let client: EdgeClient;
  let pool: KvFetchPool;
  let objectBytes: number;
  const options = (url: string) => ({ edges: [url], timeoutMs: 5_000, secret: TEST_EDGE_SECRET });
  const keyOf = (i: number): string => `kv/shm/chunk-${i}.kv`;
  const fileOf = (key: string): string => join(edge.shm!.dir, shmObjectName(key));

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'kdn-shm-'));
    await mkdir(join(dir, 'shm'));
    const object = encodeKVObject(kvTensors(SHAPE, 1), { modelFingerprint: 'shm-test', tokenIds: IDS, codec: codecFromString('fp16') });
    objectBytes = object.length;
    // Room for one fp16 and one int4 object in memory, so a second fp16 evicts the first; the disk tier keeps them all.
    edge = await startEdge({
      port: 0,
      diskPath: join(dir, 'disk'),
      memoryBytes: Math.floor(objectBytes * 2.2),
      diskBytes: '64MiB',
      originUrl: `file:${join(dir, 'origin')}`,
      secret: TEST_EDGE_SECRET,
      shmDir: join(dir, 'shm'),
    });
    client = new EdgeClient(options(edge.url));
    pool = new KvFetchPool(options(edge.url), 2);
  });

  after(async () => {
    await pool?.close();
    client?.close();
    await edge?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  const put = async (i: number, codec = 'fp16'): Promise<void> => {
    const bytes = encodeKVObject(kvTensors(SHAPE, i), { modelFingerprint: 'shm-test', tokenIds: IDS, codec: codecFromString(codec) });
    await client.put(keyOf(i), bytes);
    await edge.shm!.settled();
  };

  it('keeps memory-tier objects as private files, and serves them to the pool and the event loop with tier "shm"', async () => {
    await put(1);
    await put(2, 'int4+lz4');
    expect(statSync(edge.shm!.dir).mode & 0o777).to.equal(0o700);
    for (const i of [1, 2]) expect(statSync(fileOf(keyOf(i))).mode & 0o777, `object ${i}`).to.equal(0o600);
    for (const i of [1, 2]) {
      const [fromPool, fromLoop] = await Promise.all([drain(pool, keyOf(i)), drain(inThreadFetcher(client), keyOf(i))]);
      expect([fromPool.from, fromLoop.from]).to.deep.equal(['shm', 'shm']);
      sameLayers(fromPool.blocks, fromLoop.blocks);
      expect(fromPool.blocks[3]!.decode().keys).to.deep.equal(fromLoop.blocks[3]!.decode().keys);
    }
    // One thread with both objects queued: it sends both headers, then reads and hands over their layers.
    const single = new KvFetchPool(options(edge.url), 1);
    try {
      const [one, two] = await Promise.all([drain(single, keyOf(1)), drain(single, keyOf(2))]);
      expect([one.from, two.from]).to.deep.equal(['shm', 'shm']);
      sameLayers(one.blocks, (await drain(inThreadFetcher(client), keyOf(1))).blocks);
      sameLayers(two.blocks, (await drain(inThreadFetcher(client), keyOf(2))).blocks);
    } finally {
      await single.close();
    }
    const chunk = new ChunkFetch(pool, keyOf(1), EXPECT, new AbortController().signal);
    const layers: number[] = [];
    for await (const block of (await chunk.reader).layers) layers.push(block.layer);
    await chunk.done;
    expect(layers).to.deep.equal([0, 1, 2, 3]);
    expect(chunk.tier).to.equal('shm');
    expect(chunk.bytes).to.equal(objectBytes);
  });

  it('counts a read from shared memory as a use at the edge (its LRU and hits)', async () => {
    const hits = edge.stats().memory.hits;
    const shm = new ShmSource(client);
    expect(await shm.read(keyOf(1), EXPECT, false)).to.not.equal(undefined);
    for (let i = 0; i < 100 && edge.stats().memory.hits === hits; i++) await new Promise((resolve) => setTimeout(resolve, 20));
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(edge.stats().memory.hits).to.be.greaterThan(hits);
  });

  it('removes the file of an evicted object and then serves the key over HTTP', async () => {
    // Object 2 (int4) was used less recently than object 1 (just read), so the next fp16 object evicts it.
    await put(3);
    expect(edge.stats().memory.evictions).to.be.greaterThan(0);
    expect(existsSync(fileOf(keyOf(2))), 'evicted object 2').to.equal(false);
    expect(existsSync(fileOf(keyOf(1))), 'recently read object 1').to.equal(true);
    expect(existsSync(fileOf(keyOf(3)))).to.equal(true);
    expect(edge.stats().shm).to.include({ dir: edge.shm!.dir, writeErrors: 0 });
    expect(edge.stats().shm!.removes).to.be.greaterThan(0);
    const got = await drain(pool, keyOf(2));
    expect(got.from).to.equal('disk');
    // The HTTP fetch brought it back into memory (evicting object 1 now), so it is shared again.
    await edge.shm!.settled();
    expect((await drain(pool, keyOf(2))).from).to.equal('shm');
  });

  it('rejects a damaged file (KV_CORRUPT) and fetches the object over HTTP instead', async () => {
    const key = keyOf(3);
    const reference = await drain(inThreadFetcher(client), key);
    const file = fileOf(key);
    const bytes = await readFile(file);
    bytes[bytes.length - 100]! ^= 0xff;
    await writeFile(`${file}.tmp`, bytes);
    await rename(`${file}.tmp`, file);

    for (const blockingReads of [false, true]) {
      const shm = new ShmSource(client, { blockingReads });
      const rejected: string[] = [];
      shm.onReject = (_key, code) => rejected.push(code);
      expect(await shm.read(key, EXPECT, false), `blocking reads: ${blockingReads}`).to.equal(undefined);
      expect(rejected).to.deep.equal(['KV_CORRUPT']);
      expect(shm.counters).to.deep.equal({ hits: 0, misses: 0, rejected: 1 });
      // The header is intact: open accepts the file, and only the payload's hash rejects it.
      const opened = await new ShmSource(client, { blockingReads }).open(key, EXPECT);
      expect(opened?.header.tokens).to.equal(IDS.length);
      await opened!.close();
    }

    // The pool's thread announced the object from the file's header, then received its layers over HTTP: the
    // object's tier says so once it is read. The edge held the object only in that file, and it is no longer the file
    // the edge wrote: the edge dropped it from memory, answered from its disk tier and wrote the file again.
    const got = await drain(pool, key);
    expect(got.from).to.equal('disk');
    sameLayers(got.blocks, reference.blocks);
    await edge.shm!.settled();
    for (const fetcher of [pool, inThreadFetcher(client)]) {
      const again = await drain(fetcher, key);
      expect(again.from).to.equal('shm');
      sameLayers(again.blocks, reference.blocks);
    }
  });

  it('never reads the folder of an edge whose identity differs (an edge on another host)', async () => {
    const identity = join(edge.shm!.dir, SHM_IDENTITY_FILE);
    const original = await readFile(identity, 'utf8');
    await writeFile(identity, 'another-host');
    try {
      const shm = new ShmSource(client);
      expect(await shm.read(keyOf(3), EXPECT, false)).to.equal(undefined);
      expect(shm.counters).to.deep.equal({ hits: 0, misses: 0, rejected: 0 });
      const fresh = new KvFetchPool(options(edge.url), 1);
      try {
        expect((await drain(fresh, keyOf(3))).from).to.equal('memory');
      } finally {
        await fresh.close();
      }
    } finally {
      await writeFile(identity, original);
    }
  });

  it('reads nothing from shared memory for an edge without a folder', async () => {
    const plain = await startEdge({
      port: 0,
      diskPath: join(dir, 'plain-disk'),
      memoryBytes: '16MiB',
      diskBytes: 0,
      originUrl: `file:${join(dir, 'origin')}`,
      secret: TEST_EDGE_SECRET,
    });
    const plainClient = new EdgeClient(options(plain.url));
    try {
      expect(plain.shm).to.equal(undefined);
      expect(await plainClient.shmInfo(plain.url)).to.deep.equal({ dir: null });
      expect((await drain(inThreadFetcher(plainClient), keyOf(3))).from).to.equal('origin');
      expect((await drain(inThreadFetcher(plainClient), keyOf(3))).from).to.equal('memory');
    } finally {
      plainClient.close();
      await plain.close();
    }
  });

  it('removes its folder at shutdown, and at start the folders of edges that were killed', async () => {
    const orphan = join(dir, 'shm', 'kdn-edge-killed');
    const living = join(dir, 'shm', 'kdn-edge-living');
    for (const [folder, pid] of [
      [orphan, spawnSync('true').pid],
      [living, process.pid],
    ] as const) {
      await mkdir(folder);
      await writeFile(join(folder, 'pid'), String(pid));
    }
    const other = await startEdge({
      port: 0,
      diskPath: join(dir, 'other-disk'),
      memoryBytes: '16MiB',
      diskBytes: 0,
      originUrl: `file:${join(dir, 'origin')}`,
      secret: TEST_EDGE_SECRET,
      shmDir: join(dir, 'shm'),
    });
    const otherClient = new EdgeClient(options(other.url));
    await drain(inThreadFetcher(otherClient), keyOf(3));
    await other.shm!.settled();
    expect(existsSync(orphan), 'folder of a process that is gone').to.equal(false);
    expect(existsSync(living), 'folder of a running process').to.equal(true);
    const folder = other.shm!.dir;
    expect(await readdir(folder)).to.include(shmObjectName(keyOf(3)));
    otherClient.close();
    await other.close();
    expect(existsSync(folder)).to.equal(false);
  });
});
