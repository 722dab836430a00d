/**
 * The query path's transform tables (kdn/query/transform-tables.ts) with real parts: objects of the transform
 * codec received by a fetch pool from a real edge, the table read from a file-store origin, the engine on its own
 * thread (so it holds only the tables it is given). An object resolves only once its table is registered
 * everywhere; a table that is missing or stored under another hash fails the object's open.
 */
import { expect } from 'chai';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { EdgeClient } from '../../edge/client/client.ts';
import { startEdge, type RunningEdge } from '../../edge/server/main.ts';
import { createEngineInWorker, type Engine } from '../../engine-adapter/index.ts';
import { KvFetchPool } from '../../kdn/query/kv-fetch-pool.ts';
import { TransformTableLoader, withTransformTables } from '../../kdn/query/transform-tables.ts';
import { fitTransformTable } from '../../storage/kv-object/codecs/transform-fit.ts';
import type { TransformTable } from '../../storage/kv-object/codecs/transform-table.ts';
import { transformTables } from '../../storage/kv-object/codecs/transform-tables.ts';
import { codecFromString, encodeKVObject, tokenHash } from '../../storage/kv-object/index.ts';
import type { CodecSpec, KVExpectation, KVTensors } from '../../storage/kv-object/types.ts';
import { transformTableKey } from '../../storage/keys.ts';
import { openStore } from '../../storage/open-store.ts';
import type { ObjectStore } from '../../storage/object-store.ts';
import { kvTensors, tokenIds } from '../../fixtures/kv-data.ts';
import { TEST_EDGE_SECRET } from '../edge/helpers.ts';
import { testModel, type TestModel } from './support/tiny-model.ts';

async function code(p: Promise<unknown>): Promise<string> {
  return p.then(
    () => 'resolved',
    (e: { code?: string }) => e.code ?? String(e),
  );
}

describe('transform tables on the query path', function () {
  this.timeout(120_000);
  let dir: string;
  let model: TestModel;
  let engine: Engine;
  let edge: RunningEdge;
  let client: EdgeClient;
  let pool: KvFetchPool;
  let origin: ObjectStore;
  let kv: KVTensors;
  let expectation: KVExpectation;
  const ids = tokenIds(24);
  /** Table hashes the loaders under test asked their source for, in order. */
  let asked: string[] = [];

  const loaderFetcher = (): ReturnType<typeof withTransformTables> => {
    const source = (hash: string): Promise<Uint8Array> => {
      asked.push(hash);
      return origin.get(transformTableKey(engine.info.fingerprint, hash));
    };
    return withTransformTables(pool, new TransformTableLoader(source, engine, pool));
  };
  const fitTable = (scale: number): TransformTable => {
    const scaled = { ...kv, perLayer: kv.perLayer.map((l) => ({ keys: l.keys.map((x) => x * scale), values: l.values })) };
    return transformTables.register(fitTransformTable([scaled], engine.info.fingerprint));
  };
  const put = async (key: string, codec: CodecSpec): Promise<void> => {
    await client.put(key, encodeKVObject(kv, { modelFingerprint: engine.info.fingerprint, tokenIds: ids, codec }));
  };
  const transform = (table: TransformTable): CodecSpec => ({ name: 'transform', lz4: false, table: table.hash, level: 1 });

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'kdn-transform-tables-'));
    model = await testModel();
    engine = await createEngineInWorker({ modelDir: model.dir, backend: 'cpu' });
    const { layers, kvHeads, headDim } = engine.info;
    kv = { ...kvTensors({ layers, kvHeads, headDim, tokens: ids.length }, 9), ropeApplied: false };
    expectation = { modelFingerprint: engine.info.fingerprint, layers, kvHeads, headDim, tokens: ids.length, tokenHash: tokenHash(ids) };
    const originUrl = `file:${join(dir, 'origin')}`;
    origin = openStore(originUrl);
    const diskPath = join(dir, 'disk');
    edge = await startEdge({ port: 0, diskPath, memoryBytes: '64MiB', diskBytes: 0, originUrl, secret: TEST_EDGE_SECRET });
    const options = { edges: [edge.url], timeoutMs: 5_000, secret: TEST_EDGE_SECRET };
    client = new EdgeClient(options);
    pool = new KvFetchPool(options, 2);
  });
  beforeEach(() => {
    asked = [];
  });
  after(async () => {
    await pool?.close();
    client?.close();
    await edge?.close();
    await origin?.close();
    await engine?.dispose();
    await model?.cleanup();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('loads a table once for all its objects, registers it here and in the engine, which then injects them', async () => {
    const table = fitTable(1);
    await origin.put(transformTableKey(engine.info.fingerprint, table.hash), table.bytes);
    await put('kv/tt/a.kv', transform(table));
    await put('kv/tt/b.kv', transform(table));
    // This thread had the table only to encode with: the loader must register it again.
    transformTables.clear();
    const fetcher = loaderFetcher();
    const signal = new AbortController().signal;
    const [a, b] = await Promise.all([fetcher.open('kv/tt/a.kv', expectation, signal), fetcher.open('kv/tt/b.kv', expectation, signal)]);
    expect(asked).to.deep.equal([table.hash]);
    expect(transformTables.find(table.hash)).to.not.equal(undefined);
    const session = engine.createSession({ capacity: 64 });
    try {
      const { logits } = await session.injectKVAndPrefill([a.reader, b.reader], [5]);
      expect(logits.length).to.equal(engine.info.vocabSize);
      expect(session.length).to.equal(2 * ids.length + 1);
    } finally {
      session.dispose();
    }
  });

  it('a table missing at the origin fails the open; once stored, the next open loads it', async () => {
    const table = fitTable(2);
    await put('kv/tt/late.kv', transform(table));
    const fetcher = loaderFetcher();
    expect(await code(fetcher.open('kv/tt/late.kv', expectation, new AbortController().signal))).to.equal('NOT_FOUND');
    await origin.put(transformTableKey(engine.info.fingerprint, table.hash), table.bytes);
    const got = await fetcher.open('kv/tt/late.kv', expectation, new AbortController().signal);
    for await (const _ of got.reader.layers);
    expect(asked).to.deep.equal([table.hash, table.hash]);
  });

  it('a table stored under another hash is KV_CORRUPT', async () => {
    const [named, other] = [fitTable(3), fitTable(4)];
    await origin.put(transformTableKey(engine.info.fingerprint, named.hash), other.bytes);
    await put('kv/tt/swapped.kv', transform(named));
    expect(await code(loaderFetcher().open('kv/tt/swapped.kv', expectation, new AbortController().signal))).to.equal('KV_CORRUPT');
  });

  it('objects of other codecs never ask for a table', async () => {
    await put('kv/tt/int4.kv', codecFromString('int4'));
    const got = await loaderFetcher().open('kv/tt/int4.kv', expectation, new AbortController().signal);
    for await (const _ of got.reader.layers);
    expect(asked).to.deep.equal([]);
  });
});
