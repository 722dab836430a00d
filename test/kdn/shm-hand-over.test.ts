import { expect } from 'chai';
import { mkdir, mkdtemp, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { MessageChannel } from 'node:worker_threads';
import { isKdnError } from '../../common/errors.ts';
import { EdgeClient } from '../../edge/client/client.ts';
import { shmObjectName } from '../../edge/protocol.ts';
import { startEdge, type RunningEdge } from '../../edge/server/main.ts';
import type { RoutedBlocks } from '../../engine-adapter/worker/routed-stream.ts';
import { BlockOutlet } from '../../kdn/query/block-outlet.ts';
import { HandOverWindow } from '../../kdn/query/hand-over-window.ts';
import type { FromWorker } from '../../kdn/query/kv-fetch-protocol.ts';
import { KvFetchPool } from '../../kdn/query/kv-fetch-pool.ts';
import { ShmHandOver, type ShmOutcome } from '../../kdn/query/shm-hand-over.ts';
import { ShmSource } from '../../kdn/query/shm-source.ts';
import { codecFromString, encodeKVObject, kvPayloadOffset, readKVHeader, readKVObject, tokenHash } from '../../storage/kv-object/index.ts';
import type { KVExpectation } from '../../storage/kv-object/types.ts';
import { kvTensors, tokenIds } from '../../fixtures/kv-data.ts';
import { TEST_EDGE_SECRET } from '../edge/helpers.ts';

const SHAPE = { layers: 4, kvHeads: 2, headDim: 64, tokens: 300 };
const IDS = tokenIds(SHAPE.tokens);
const EXPECT: KVExpectation = { modelFingerprint: 'hand-over-test', ...SHAPE, tokenHash: tokenHash(IDS) };

// Layers of just over a megabyte: a fetch thread's hand-over takes one per step (shm-hand-over.ts STEP_BYTES).
const LARGE = { ...SHAPE, tokens: 2100 };
const LARGE_IDS = tokenIds(LARGE.tokens);
const LARGE_EXPECT: KVExpectation = { ...EXPECT, tokens: LARGE.tokens, tokenHash: tokenHash(LARGE_IDS) };

function object(seed: number, codec = 'fp16'): Buffer {
  return encodeKVObject(kvTensors(SHAPE, seed), { modelFingerprint: 'hand-over-test', tokenIds: IDS, codec: codecFromString(codec) });
}

/** What a hand-over posted, in order: [object, layer] per block, and each object's end. */
class Recorder {
  readonly events: string[] = [];
  readonly blocks = new Map<number, Map<number, Uint8Array>>();

  outlet(id: number): BlockOutlet {
    const outlet = new BlockOutlet(
      id,
      (message: FromWorker) => this.record(message),
      new HandOverWindow(0),
      () => undefined,
    );
    outlet.deliver();
    return outlet;
  }

  private record(message: FromWorker): void {
    if (message.type === 'layers') {
      for (const { layer, bytes } of message.layers) {
        this.events.push(`${message.id}:${layer}`);
        if (!this.blocks.has(message.id)) this.blocks.set(message.id, new Map());
        this.blocks.get(message.id)!.set(layer, bytes.slice());
      }
    } else if (message.type === 'end') this.events.push(`${message.id}:end`);
  }
}

describe('shared-memory hand-over: a fetch thread hands files over a few verified layers at a time', function () {
  this.timeout(30_000);
  let dir: string;
  let edge: RunningEdge;
  let client: EdgeClient;
  const options = (url: string) => ({ edges: [url], timeoutMs: 5_000, secret: TEST_EDGE_SECRET });
  const keyOf = (i: number): string => `kv/hand-over/chunk-${i}.kv`;
  const objects = new Map<number, Buffer>();

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'kdn-hand-over-'));
    await mkdir(join(dir, 'shm'));
    edge = await startEdge({
      port: 0,
      diskPath: join(dir, 'disk'),
      memoryBytes: '32MiB',
      diskBytes: 0,
      originUrl: `file:${join(dir, 'origin')}`,
      secret: TEST_EDGE_SECRET,
      shmDir: join(dir, 'shm'),
    });
    client = new EdgeClient(options(edge.url));
    for (const [i, codec] of [
      [0, 'fp16'],
      [1, 'fp16'],
      [2, 'int4+lz4'],
    ] as const) {
      objects.set(i, object(i + 1, codec));
    }
    objects.set(
      3,
      encodeKVObject(kvTensors(LARGE, 4), { modelFingerprint: 'hand-over-test', tokenIds: LARGE_IDS, codec: codecFromString('fp16') }),
    );
    for (const [i, bytes] of objects) await client.put(keyOf(i), bytes);
    await edge.shm!.settled();
  });

  after(async () => {
    client?.close();
    await edge?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  /**
   * Opens objects `ids` and hands them over one layer per step (or steps of `stepBytes`); resolves with what was
   * posted and the outcomes.
   */
  async function handOver(ids: number[], interleave: boolean, abortId?: number, stepBytes = 1) {
    const source = new ShmSource(client, { blockingReads: true });
    const hand = new ShmHandOver(source, (bytes) => bytes.slice(), stepBytes);
    const recorder = new Recorder();
    const aborted = new AbortController();
    const files = await Promise.all(ids.map((i) => source.open(keyOf(i), i === 3 ? LARGE_EXPECT : EXPECT)));
    const outcomes = ids.map((id, n) =>
      hand.add(files[n]!, recorder.outlet(id), id === abortId ? aborted.signal : new AbortController().signal, {
        interleave,
        verifyAlongside: false,
      }),
    );
    aborted.abort();
    const settled = await Promise.allSettled(outcomes);
    return { recorder, source, settled };
  }

  /** Every layer of object `id` was posted once, equal to what a reader of the stored object yields. */
  async function expectIntact(recorder: Recorder, id: number): Promise<void> {
    const reader = await readKVObject(Readable.from([objects.get(id)!]), undefined, { hashOffThread: false });
    const got = recorder.blocks.get(id)!;
    expect([...got.keys()].sort()).to.deep.equal([0, 1, 2, 3]);
    for await (const block of reader.layers) {
      expect(Buffer.from(got.get(block.layer)!).equals(Buffer.from(block.encoded)), `object ${id} layer ${block.layer}`).to.equal(true);
    }
  }

  it('interleaved objects go a step of each in turn, so every first layer is over before any last one', async () => {
    const { recorder, source, settled } = await handOver([0, 1, 2], true);
    expect(settled.map((s) => (s as PromiseFulfilledResult<ShmOutcome>).value)).to.deep.equal(['done', 'done', 'done']);
    const layers = recorder.events.filter((e) => !e.endsWith(':end'));
    expect(layers).to.deep.equal(['0:0', '1:0', '2:0', '0:1', '1:1', '2:1', '0:2', '1:2', '2:2', '0:3', '1:3', '2:3']);
    for (const id of [0, 1, 2]) await expectIntact(recorder, id);
    expect(source.counters).to.deep.equal({ hits: 3, misses: 0, rejected: 0 });
  });

  it('interleaved objects go layer 0 of each first, then steps of several layers in turn', async () => {
    // A megabyte a step takes all four layers of these objects (150 KB each) at once, after layer 0 alone.
    const { recorder, settled } = await handOver([0, 1, 2], true, undefined, 1 << 20);
    expect(settled.every((s) => s.status === 'fulfilled')).to.equal(true);
    const layers = recorder.events.filter((e) => !e.endsWith(':end'));
    expect(layers).to.deep.equal(['0:0', '1:0', '2:0', '0:1', '0:2', '0:3', '1:1', '1:2', '1:3', '2:1', '2:2', '2:3']);
    for (const id of [0, 1, 2]) await expectIntact(recorder, id);
  });

  it('other objects go whole, one after another, in the order they were opened', async () => {
    const { recorder, settled } = await handOver([1, 0], false);
    expect(settled.every((s) => s.status === 'fulfilled')).to.equal(true);
    expect(recorder.events).to.deep.equal(['1:0', '1:1', '1:2', '1:3', '1:end', '0:0', '0:1', '0:2', '0:3', '0:end']);
    for (const id of [0, 1]) await expectIntact(recorder, id);
  });

  it('an aborted object closes its file and fails with TIMEOUT; the others are handed over whole', async () => {
    const { recorder, settled } = await handOver([0, 1], true, 0);
    const [first, second] = settled;
    expect(first!.status).to.equal('rejected');
    const reason = (first as PromiseRejectedResult).reason;
    expect(isKdnError(reason) && reason.code).to.equal('TIMEOUT');
    expect((second as PromiseFulfilledResult<ShmOutcome>).value).to.equal('done');
    expect(recorder.blocks.has(0)).to.equal(false);
    await expectIntact(recorder, 1);
  });

  it('a failure handing blocks on fails that object only; the others are handed over whole', async () => {
    const source = new ShmSource(client, { blockingReads: true });
    const hand = new ShmHandOver(source, (bytes) => bytes.slice(), 1);
    const recorder = new Recorder();
    const broken = new BlockOutlet(
      0,
      () => {
        throw new Error('the port is gone');
      },
      new HandOverWindow(0),
      () => undefined,
    );
    const signal = new AbortController().signal;
    const [a, b] = await Promise.all([source.open(keyOf(0), EXPECT), source.open(keyOf(1), EXPECT)]);
    const order = { interleave: true, verifyAlongside: false };
    const outcomes = await Promise.allSettled([hand.add(a!, broken, signal, order), hand.add(b!, recorder.outlet(1), signal, order)]);
    expect(outcomes[0]!.status).to.equal('rejected');
    expect((outcomes[0] as PromiseRejectedResult).reason.message).to.equal('the port is gone');
    expect((outcomes[1] as PromiseFulfilledResult<ShmOutcome>).value).to.equal('done');
    await expectIntact(recorder, 1);
  });

  it('a layer that fails verification stops the file there; a fetch thread sends the rest over HTTP', async () => {
    const key = keyOf(3);
    const file = join(edge.shm!.dir, shmObjectName(key));
    const bytes = await readFile(file);
    const header = readKVHeader(bytes);
    bytes[kvPayloadOffset(bytes) + header.layerOffsets[2]! + 10]! ^= 0xff;
    await writeFile(`${file}.tmp`, bytes);
    await rename(`${file}.tmp`, file);

    const { recorder, source, settled } = await handOver([3], true);
    const outcome = (settled[0] as PromiseFulfilledResult<ShmOutcome>).value;
    expect(outcome).to.deep.include({ from: 2 });
    expect(outcome !== 'done' && outcome.header).to.deep.equal(header);
    expect(recorder.events).to.deep.equal(['3:0', '3:1']);
    expect(source.counters).to.deep.equal({ hits: 0, misses: 0, rejected: 1 });

    // Through a fetch thread: layers 0 and 1 from the file, 2 and 3 over HTTP behind the same header, each once.
    const pool = new KvFetchPool(options(edge.url), 1);
    try {
      const got = await pool.open(key, LARGE_EXPECT, new AbortController().signal, { interleave: true });
      const layers: number[] = [];
      const stored: Uint8Array[] = [];
      for await (const block of got.reader.layers) {
        layers.push(block.layer);
        stored.push(block.encoded.slice());
      }
      expect(layers).to.deep.equal([0, 1, 2, 3]);
      // The edge held the object only in the file it found replaced: it dropped it and fetched it again.
      expect(got.servedFrom).to.equal('origin');
      const rebuilt = Buffer.concat([objects.get(3)!.subarray(0, kvPayloadOffset(objects.get(3)!)), ...stored]);
      expect(rebuilt.equals(objects.get(3)!)).to.equal(true);
    } finally {
      await pool.close();
    }
  });

  it('announced to the engine (verified alongside), a layer that fails verification fails the object', async () => {
    const key = keyOf(3);
    const file = join(edge.shm!.dir, shmObjectName(key));
    const stored = objects.get(3)!;
    const bytes = Buffer.from(stored);
    const at = kvPayloadOffset(bytes) + readKVHeader(bytes).layerOffsets[2]! + 10;
    bytes[at] = stored[at]! ^ 0xff;
    await writeFile(`${file}.tmp`, bytes);
    await rename(`${file}.tmp`, file);

    const source = new ShmSource(client, { blockingReads: true });
    const hand = new ShmHandOver(source, (b) => b.slice(), 1);
    const order = { interleave: true, verifyAlongside: true };
    const signal = new AbortController().signal;
    const { port1: engineEnd, port2: fetchEnd } = new MessageChannel();
    const routed: RoutedBlocks[] = [];
    engineEnd.on('message', (m: RoutedBlocks) => routed.push(m));
    try {
      const outlet = new BlockOutlet(
        3,
        () => undefined,
        new HandOverWindow(0),
        () => undefined,
      );
      outlet.route(fetchEnd);
      const failed = await hand.add((await source.open(key, LARGE_EXPECT))!, outlet, signal, order).then(
        () => null,
        (err: unknown) => err,
      );
      expect(isKdnError(failed) && failed.code).to.equal('KV_CORRUPT');
      for (let i = 0; i < 100 && routed.length < 3; i++) await new Promise((resolve) => setTimeout(resolve, 5));
      const [announced, ...verified] = routed;
      expect(announced!.type === 'blocks' && announced.blocks.map((b) => [b.layer, b.bytes, 'announced' in b])).to.deep.equal(
        [0, 1, 2, 3].map((layer) => [layer, undefined, true]),
      );
      expect(verified).to.deep.equal([
        { type: 'verified', through: 1 },
        { type: 'verified', through: 2 },
      ]);

      // Not yet routed when the layer failed, the announcement is taken back: the layers verified go as usual when
      // the object is routed, and the rest comes over HTTP.
      const held = new BlockOutlet(
        4,
        () => undefined,
        new HandOverWindow(0),
        () => undefined,
      );
      const outcome = await hand.add((await source.open(key, LARGE_EXPECT))!, held, signal, order);
      expect(outcome).to.deep.include({ from: 2 });
      const later = new MessageChannel();
      const laterRouted: RoutedBlocks[] = [];
      later.port1.on('message', (m: RoutedBlocks) => laterRouted.push(m));
      held.route(later.port2);
      for (let i = 0; i < 100 && laterRouted.length < 1; i++) await new Promise((resolve) => setTimeout(resolve, 5));
      expect(laterRouted.map((m) => m.type === 'blocks' && m.blocks.map((b) => [b.layer, 'announced' in b]))).to.deep.equal([
        [
          [0, false],
          [1, false],
        ],
      ]);
      later.port1.close();
    } finally {
      engineEnd.close();
    }
  });
});
