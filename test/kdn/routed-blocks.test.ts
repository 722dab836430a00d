import { expect } from 'chai';
import { existsSync, readdirSync, readlinkSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { MessageChannel } from 'node:worker_threads';
import { pino } from 'pino';
import { createLogger, type Logger } from '../../common/log.ts';
import { EdgeClient } from '../../edge/client/client.ts';
import { startEdge, type RunningEdge } from '../../edge/server/main.ts';
import { createEngine, createEngineInWorker, type Engine } from '../../engine-adapter/index.ts';
import type { ContextPiece } from '../../kdn/query/context-plan.ts';
import { KvFetchPool } from '../../kdn/query/kv-fetch-pool.ts';
import { runQuery, type QueryMode, type QueryOutcome } from '../../kdn/query/run-query.ts';
import { sinkToken } from '../../kdn/sink-token.ts';
import { codecFromString, encodeKVObject, layerBlockOf, readKVObject } from '../../storage/kv-object/index.ts';
import type { KVBlock, KVHeader } from '../../storage/kv-object/types.ts';
import { shmObjectName } from '../../edge/protocol.ts';
import { BlockChannel } from '../../engine-adapter/worker/block-channel.ts';
import { isRoutable } from '../../engine-adapter/worker/routed-stream.ts';
import { TEST_EDGE_SECRET } from '../edge/helpers.ts';
import { openOrSkip } from '../engine/webgpu-support.ts';
import { startFlippingProxy } from './support/flipping-proxy.ts';
import { testModel, type TestModel } from './support/tiny-model.ts';

const TEXTS = [
  'The river carries water to the sea. A miller watches the ships at night.',
  'The old bridge remembers the floods, and the town rebuilt it twice in stone.',
];
const QUESTION = ' What does the miller watch?';

/**
 * A fetch pool's objects injected into the engine's thread travel from the fetch thread straight to the engine's
 * (routed-stream.ts): the event loop gets no layer bytes, the answer is the one recompute gives, and a corrupt object
 * on that path is rejected and the query falls back as it always did.
 */
describe('KV blocks routed from the fetch threads to the engine thread', function () {
  this.timeout(180_000);
  let dir: string;
  let model: TestModel;
  let edge: RunningEdge;
  let client: EdgeClient;
  let engine: Engine;
  let pieces: ContextPiece[];
  let promptIds: number[];
  /** Each query its own tenant, so none places chunks an earlier one left in the engine's hot tier. */
  let tenants = 0;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'kdn-routed-'));
    await mkdir(join(dir, 'shm'));
    model = await testModel();
    edge = await startEdge({
      port: 0,
      diskPath: join(dir, 'disk'),
      memoryBytes: '64MiB',
      diskBytes: 0,
      originUrl: `file:${join(dir, 'origin')}`,
      secret: TEST_EDGE_SECRET,
      shmDir: join(dir, 'shm'),
    });
    client = new EdgeClient({ edges: [edge.url], timeoutMs: 5_000, secret: TEST_EDGE_SECRET });
    engine = await createEngineInWorker({ modelDir: model.dir, backend: 'cpu' });
    promptIds = engine.tokenizer.encode(QUESTION, { addSpecialTokens: false });
    pieces = await storeChainedChunks(model.dir, client);
  });

  after(async () => {
    await engine?.dispose();
    client?.close();
    await edge?.close();
    await model?.cleanup();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  async function query(
    pool: KvFetchPool,
    mode: QueryMode,
    log: Logger = createLogger('test'),
    on: Engine = engine,
  ): Promise<Omit<QueryOutcome, 'level'>> {
    const deps = { engine: on, fetcher: pool, log };
    return runQuery(deps, {
      tenant: `tenant-${++tenants}`,
      pieces,
      promptIds,
      mode,
      maxTokens: 12,
      temperature: 0,
      stopStrings: [],
      arrivedAt: performance.now(),
      retrievalMs: 0,
    });
  }

  it('hands no layer bytes to the event loop and answers as recompute does', async () => {
    const pool = new KvFetchPool({ edges: [edge.url], timeoutMs: 5_000, secret: TEST_EDGE_SECRET }, 2, { sharedMemory: false });
    try {
      const before = (await engine.work()).kvWrites;
      const injected = await query(pool, 'inject');
      const after = (await engine.work()).kvWrites;
      const recomputed = await query(pool, 'recompute');
      expect(injected.chunks.map((c) => c.tier)).to.not.include('computed');
      expect(injected.tokens.reused).to.equal(injected.tokens.context);
      expect(injected.bytes).to.be.greaterThan(0);
      expect(pool.deliveredBytes).to.equal(0);
      // The engine's thread reports the blocks it placed: every layer of every piece.
      expect(after.blocks - before.blocks).to.equal(pieces.length * engine.info.layers);
      expect(injected.answer).to.equal(recomputed.answer);
    } finally {
      await pool.close();
    }
  });

  for (const verifyAlongside of [false, true]) {
    const how = verifyAlongside ? 'verified alongside the engine (every layer announced first)' : 'verified before handing over';
    it(`objects read from a same-host edge's shared memory go the same way, as where their layers lie: ${how}`, async () => {
      const pool = new KvFetchPool({ edges: [edge.url], timeoutMs: 5_000, secret: TEST_EDGE_SECRET }, 1, { verifyAlongside });
      try {
        const before = (await engine.work()).kvWrites;
        const injected = await query(pool, 'inject');
        const after = (await engine.work()).kvWrites;
        const recomputed = await query(pool, 'recompute');
        expect(injected.chunks.map((c) => c.tier)).to.deep.equal(pieces.map(() => 'shm'));
        expect(pool.deliveredBytes).to.equal(0);
        // No layer came with its bytes: the engine's thread read each from the edge's file.
        expect(after.readBlocks - before.readBlocks).to.equal(pieces.length * engine.info.layers);
        expect(injected.answer).to.equal(recomputed.answer);
      } finally {
        await pool.close();
      }
    });
  }

  it('verified alongside: a damaged shared-memory file fails that try, and the answer is still the recomputed one', async () => {
    const key = pieces[1]!.key;
    const file = join(edge.shm!.dir, shmObjectName(key));
    await client.getBuffer(key);
    await until(() => existsSync(file));
    const good = await readFile(file);
    // A byte of the last layer: well after the object is announced and routed to the engine.
    const bad = Buffer.from(good);
    bad[bad.length - 5]! ^= 0xff;
    await writeFile(file, bad);
    const pool = new KvFetchPool({ edges: [edge.url], timeoutMs: 5_000, secret: TEST_EDGE_SECRET }, 1, { verifyAlongside: true });
    const warnings: { msg: string; err?: { code?: string } }[] = [];
    const log = pino({ level: 'warn' }, { write: (line: string) => void warnings.push(JSON.parse(line)) });
    try {
      const injected = await query(pool, 'inject', log);
      const recomputed = await query(pool, 'recompute');
      expect(injected.answer).to.equal(recomputed.answer);
      // Announced to the engine before the bad layer was checked, the object fails the overlapped try as corrupt;
      // checked before it was routed, its other layers come over HTTP (test/kdn/shm-hand-over.test.ts has both).
      const failed = warnings.filter((w) => w.msg === 'overlapped injection failed; injecting chunk by chunk');
      expect(failed.length).to.be.at.most(1);
      expect(failed.map((w) => w.err?.code)).to.deep.equal(failed.map(() => 'KV_CORRUPT'));
      expect(injected.chunks[1]!.tier).to.not.equal('shm');
    } finally {
      await pool.close();
      await writeFile(file, good);
    }
  });

  it("a WebGPU engine reads shared-memory objects' layers from the edge's files into its staging, answering the same", async function () {
    const gpu = await openOrSkip(this, () => createEngineInWorker({ modelDir: model.dir, backend: 'webgpu' }));
    const pool = new KvFetchPool({ edges: [edge.url], timeoutMs: 5_000, secret: TEST_EDGE_SECRET }, 1);
    try {
      const before = (await gpu.work()).kvWrites;
      const injected = await query(pool, 'inject', undefined, gpu);
      const after = (await gpu.work()).kvWrites;
      const recomputed = await query(pool, 'recompute', undefined, gpu);
      expect(injected.chunks.map((c) => c.tier)).to.deep.equal(pieces.map(() => 'shm'));
      // Every layer of every piece was read from its file, none copied on the engine's thread.
      expect(after.readBlocks - before.readBlocks).to.equal(pieces.length * gpu.info.layers);
      expect(injected.answer).to.equal(recomputed.answer);
    } finally {
      await pool.close();
      await gpu.dispose();
    }
  });

  it('receives later objects into the buffers the engine sent back', async () => {
    // Spooled blocks give their buffers back at once; these go with their bytes.
    const options = { sharedMemory: false, receiveBufferBytes: 16 * 2 ** 20, spoolBytes: 0 };
    const pool = new KvFetchPool({ edges: [edge.url], timeoutMs: 5_000, secret: TEST_EDGE_SECRET }, 1, options);
    try {
      const first = await query(pool, 'inject');
      await until(() => pool.receiveBuffers.freshBytes > 0);
      expect(pool.receiveBuffers.reusedBytes).to.equal(0);
      const second = await query(pool, 'inject');
      await until(() => pool.receiveBuffers.reusedBytes > 0);
      // The second query receives what the first did, all of it into the buffers the first one returned.
      expect(pool.receiveBuffers.reusedBytes).to.equal(pool.receiveBuffers.freshBytes);
      const recomputed = await query(pool, 'recompute');
      expect([first.answer, second.answer]).to.deep.equal([recomputed.answer, recomputed.answer]);
    } finally {
      await pool.close();
    }
  });

  it('reads shared-memory files into buffers it keeps, the engine holding none of them', async () => {
    const options = { receiveBufferBytes: 16 * 2 ** 20 };
    const pool = new KvFetchPool({ edges: [edge.url], timeoutMs: 5_000, secret: TEST_EDGE_SECRET }, 1, options);
    try {
      const answers: string[] = [];
      for (let i = 0; i < 3; i++) answers.push((await query(pool, 'inject')).answer);
      const recomputed = await query(pool, 'recompute');
      expect(answers).to.deep.equal(answers.map(() => recomputed.answer));
      await until(() => pool.receiveBuffers.reusedBytes > 0);
      // Every query reads the same bytes (each object in one step): at most the first one's into new buffers, the
      // later ones' into those, which the engine never took.
      const { reusedBytes, freshBytes } = pool.receiveBuffers;
      expect(reusedBytes).to.be.at.least(2 * freshBytes);
    } finally {
      await pool.close();
    }
  });

  it("keeps a routed object's file open until the engine is done, so blocks the edge evicts meanwhile still read", async function () {
    // Linux names an open file by its descriptor (/proc/self/fd), which is what keeps an evicted file readable.
    if (process.platform !== 'linux') this.skip();
    const pool = new KvFetchPool({ edges: [edge.url], timeoutMs: 5_000, secret: TEST_EDGE_SECRET }, 1);
    const key = pieces[0]!.key;
    const file = join(edge.shm!.dir, shmObjectName(key));
    // Read once over HTTP, so that the edge holds it in its memory tier, mirrored in its shared-memory folder.
    const { body: stored } = await client.getBuffer(key);
    await until(() => existsSync(file));
    expect(Buffer.compare(await readFile(file), stored)).to.equal(0);
    try {
      const blocks = await routedBlocks(pool, key);
      expect(blocks.every((b) => b.encoded === undefined)).to.equal(true);
      // Evicted (the edge unlinks the file) after the fetch thread verified it, before the engine read it.
      await rm(file);
      await expectLayersOf(
        stored,
        blocks.map((b) => layerBlockOf(blocks.header, b).encoded),
      );
      // Done with them, the engine's side closes its port: the fetch thread closes the file.
      expect(openOn(file)).to.be.greaterThan(0);
      blocks.channel.close();
      await until(() => openOn(file) === 0);
    } finally {
      await pool.close();
      await writeFile(file, stored);
    }
  });

  it("spools what comes over HTTP: the engine's thread gets each block as where it lies in the fetch thread's memory file", async function () {
    if (process.platform !== 'linux') this.skip();
    const pool = new KvFetchPool({ edges: [edge.url], timeoutMs: 5_000, secret: TEST_EDGE_SECRET }, 1, { sharedMemory: false });
    const key = pieces[0]!.key;
    const { body: stored } = await client.getBuffer(key);
    try {
      const blocks = await routedBlocks(pool, key);
      expect(blocks.every((b) => b.encoded === undefined && b.source.pin?.startsWith('/proc/self/fd/'))).to.equal(true);
      const path = blocks[0]!.source!.path;
      expect(new Set(blocks.map((b) => b.source!.path))).to.deep.equal(new Set([path]));
      expect(existsSync(path)).to.equal(false);
      await expectLayersOf(
        stored,
        blocks.map((b) => layerBlockOf(blocks.header, b).encoded),
      );
      await until(() => pool.spool.spooledBytes > 0);
      expect(pool.spool).to.deep.include({ sentBytes: 0, failures: 0 });
      // Done with them, the engine's side closes its port: the fetch thread closes the file, and its memory goes.
      expect(openOn(path)).to.be.greaterThan(0);
      blocks.channel.close();
      await until(() => openOn(path) === 0);
    } finally {
      await pool.close();
    }
  });

  it('closes its spool files when the pool closes, though the engine still holds their blocks', async function () {
    if (process.platform !== 'linux') this.skip();
    const pool = new KvFetchPool({ edges: [edge.url], timeoutMs: 5_000, secret: TEST_EDGE_SECRET }, 1, { sharedMemory: false });
    try {
      const blocks = await routedBlocks(pool, pieces[1]!.key);
      const path = blocks[0]!.source!.path;
      expect(openOn(path)).to.be.greaterThan(0);
      await pool.close();
      expect(openOn(path)).to.equal(0);
      blocks.channel.close();
    } finally {
      await pool.close();
    }
  });

  it("sends the blocks past the spool's bound with their bytes, and counts both kinds", async function () {
    if (process.platform !== 'linux') this.skip();
    const key = pieces[0]!.key;
    const { body: stored } = await client.getBuffer(key);
    const options = { sharedMemory: false, spoolBytes: Math.floor(stored.length / 2) };
    const pool = new KvFetchPool({ edges: [edge.url], timeoutMs: 5_000, secret: TEST_EDGE_SECRET }, 1, options);
    try {
      const blocks = await routedBlocks(pool, key);
      const spooled = blocks.filter((b) => b.source !== undefined);
      const sent = blocks.filter((b) => b.encoded !== undefined);
      expect(spooled.length).to.be.greaterThan(0);
      expect(sent.length).to.be.greaterThan(0);
      expect(spooled.length + sent.length).to.equal(blocks.length);
      await expectLayersOf(
        stored,
        blocks.map((b) => layerBlockOf(blocks.header, b).encoded),
      );
      const bytes = (list: readonly KVBlock[]) => list.reduce((n, b) => n + (b.source?.length ?? b.encoded!.length), 0);
      await until(() => pool.spool.spooledBytes + pool.spool.sentBytes === bytes(blocks));
      expect(pool.spool).to.deep.equal({ spooledBytes: bytes(spooled), sentBytes: bytes(sent), failures: 0 });
      blocks.channel.close();
    } finally {
      await pool.close();
    }
  });

  it('sends blocks received over HTTP with their bytes when the spool is off', async () => {
    const options = { sharedMemory: false, spoolBytes: 0 };
    const pool = new KvFetchPool({ edges: [edge.url], timeoutMs: 5_000, secret: TEST_EDGE_SECRET }, 1, options);
    const key = pieces[1]!.key;
    const { body: stored } = await client.getBuffer(key);
    try {
      const blocks = await routedBlocks(pool, key);
      expect(blocks.every((b) => b.encoded !== undefined && b.source === undefined)).to.equal(true);
      await expectLayersOf(
        stored,
        blocks.map((b) => b.encoded!),
      );
      expect(pool.spool).to.deep.equal({ spooledBytes: 0, sentBytes: 0, failures: 0 });
      blocks.channel.close();
    } finally {
      await pool.close();
    }
  });

  it('a WebGPU engine reads spooled blocks into its staging, answering as recompute does', async function () {
    const gpu = await openOrSkip(this, () => createEngineInWorker({ modelDir: model.dir, backend: 'webgpu' }));
    const pool = new KvFetchPool({ edges: [edge.url], timeoutMs: 5_000, secret: TEST_EDGE_SECRET }, 1, { sharedMemory: false });
    try {
      const before = (await gpu.work()).kvWrites;
      const injected = await query(pool, 'inject', undefined, gpu);
      const after = (await gpu.work()).kvWrites;
      const recomputed = await query(pool, 'recompute', undefined, gpu);
      expect(injected.chunks.map((c) => c.tier)).to.not.include.members(['computed', 'shm']);
      expect(pool.deliveredBytes).to.equal(0);
      // Every layer of every piece was read from the spool, none copied on the engine's thread.
      expect(after.readBlocks - before.readBlocks).to.equal(pieces.length * gpu.info.layers);
      expect(injected.answer).to.equal(recomputed.answer);
    } finally {
      await pool.close();
      await gpu.dispose();
    }
  });

  it('keeps no buffer with receiveBufferBytes 0', async () => {
    const pool = new KvFetchPool({ edges: [edge.url], timeoutMs: 5_000, secret: TEST_EDGE_SECRET }, 1, { receiveBufferBytes: 0 });
    try {
      await query(pool, 'inject');
      await query(pool, 'inject');
      await until(() => pool.receiveBuffers.freshBytes > 0);
      expect(pool.receiveBuffers.reusedBytes).to.equal(0);
    } finally {
      await pool.close();
    }
  });

  it('a reader read on the event loop still gets its layers there (the count sees them)', async () => {
    const pool = new KvFetchPool({ edges: [edge.url], timeoutMs: 5_000, secret: TEST_EDGE_SECRET }, 1, { sharedMemory: false });
    try {
      const got = await pool.open(pieces[0]!.key, {}, new AbortController().signal);
      const layers: number[] = [];
      for await (const block of got.reader.layers) layers.push(block.layer);
      expect(layers).to.have.length(engine.info.layers);
      expect(pool.deliveredBytes).to.be.greaterThan(0);
    } finally {
      await pool.close();
    }
  });

  it('rejects a corrupt object on the direct path and falls back, with the answer unchanged', async () => {
    // A byte of the shortest object's last layer, inside some layer of every object (past their headers), flipped in
    // the first response of each connection: the overlapped injection gets corrupt layers, the refetches good ones.
    // The bad byte comes late, when the objects are routed to the engine already: their failure goes that way too.
    const proxy = await startFlippingProxy(edge.url, Math.min(...pieces.map((p) => p.bytes)) - 10, 300);
    const pool = new KvFetchPool({ edges: [proxy.url], timeoutMs: 5_000, secret: TEST_EDGE_SECRET }, 1, { sharedMemory: false });
    const warnings: { msg: string; err?: { code?: string } }[] = [];
    const log = pino({ level: 'warn' }, { write: (line: string) => void warnings.push(JSON.parse(line)) });
    try {
      const fellBack = await query(pool, 'inject', log);
      const recomputed = await query(pool, 'recompute');
      expect(warnings.map((w) => [w.msg, w.err?.code])).to.deep.include([
        'overlapped injection failed; injecting chunk by chunk',
        'KV_CORRUPT',
      ]);
      expect(pool.deliveredBytes).to.equal(0);
      expect(fellBack.answer).to.equal(recomputed.answer);
    } finally {
      await pool.close();
      await proxy.close();
    }
  });
});

/** `key`'s blocks as the engine's thread gets them when the pool routes the object there, with the channel's end. */
async function routedBlocks(pool: KvFetchPool, key: string): Promise<KVBlock[] & { header: KVHeader; channel: BlockChannel }> {
  const got = await pool.open(key, {}, new AbortController().signal);
  const { port1, port2 } = new MessageChannel();
  expect(isRoutable(got.reader) && got.reader.route(port2)).to.equal(true);
  const channel = new BlockChannel(got.reader.header);
  channel.listen(port1);
  const blocks: KVBlock[] = [];
  // Copied as they come: the channel hands a block's buffer back to the fetch thread once it is taken.
  for await (const block of channel.reader.layers) blocks.push(block.encoded ? { ...block, encoded: block.encoded.slice() } : block);
  return Object.assign(blocks, { header: got.reader.header, channel });
}

/** Checks that `layers` are the stored object's layers (lz4 undone), in order. */
async function expectLayersOf(stored: Uint8Array, layers: Uint8Array[]): Promise<void> {
  const expected = await readKVObject(Readable.from([stored]));
  let layer = 0;
  for await (const block of expected.layers) {
    expect(Buffer.from(layers[layer]!)).to.deep.equal(Buffer.from(block.encoded));
    layer++;
  }
  expect(layer).to.equal(layers.length);
}

/** How many of this process's descriptors have `path` open (an unlinked file's name ends in ' (deleted)'). */
function openOn(path: string): number {
  return readdirSync('/proc/self/fd').filter((fd) => {
    try {
      return readlinkSync(`/proc/self/fd/${fd}`).startsWith(path);
    } catch {
      return false;
    }
  }).length;
}

/** Resolves once `done()` holds (the workers report their buffers after each object, a message behind it). */
async function until(done: () => boolean): Promise<void> {
  for (let i = 0; i < 200 && !done(); i++) await new Promise((resolve) => setTimeout(resolve, 10));
  expect(done(), 'condition still false after 2 s').to.equal(true);
}

/** The texts' chained KV (sink, then each chunk after the ones before it), stored at the edge as fp16 objects. */
async function storeChainedChunks(modelDir: string, client: EdgeClient): Promise<ContextPiece[]> {
  const local = await createEngine({ modelDir, backend: 'cpu' });
  try {
    const ids = TEXTS.map((t) => local.tokenizer.encode(t, { addSpecialTokens: false }));
    const session = local.createSession({ capacity: 1 + ids.reduce((n, t) => n + t.length, 0) });
    await session.prefill([sinkToken(local)], { logits: 'none' });
    const pieces: ContextPiece[] = [];
    for (const [index, tokenIds] of ids.entries()) {
      const start = session.length;
      await session.prefill(tokenIds, { logits: 'none' });
      const kv = await session.exportKV({ start, end: session.length });
      const bytes = encodeKVObject(kv, { modelFingerprint: local.info.fingerprint, tokenIds, codec: codecFromString('fp16') });
      const key = `kv/routed/chunk-${index}.kv`;
      await client.put(key, bytes);
      pieces.push({
        docId: 'doc',
        title: 'doc',
        index,
        score: null,
        tokenIds,
        kind: 'chained',
        key,
        bytes: bytes.length,
        codec: 'fp16',
        levels: [],
      });
    }
    session.dispose();
    return pieces;
  } finally {
    await local.dispose();
  }
}
