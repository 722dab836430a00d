import { expect } from 'chai';
import { mkdir, mkdtemp, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { EDGE_HEADERS, shmObjectName, type EdgeStats } from '../../edge/protocol.ts';
import { startEdge, type RunningEdge } from '../../edge/server/main.ts';
import { makeKVObject, signedRequest, type RawResponse } from './helpers.ts';
import { TEST_EDGE_SECRET } from './helpers.ts';

const KEY = 'kv/mirrored/doc/chunk-0001.kv';

/**
 * With a shared-memory mirror the memory tier keeps an object's bytes only in its file once that is written, and
 * answers HTTP from there: every answer a Buffer-held object gets, without the edge holding each object twice.
 */
describe('edge memory tier held in its shared-memory files', function () {
  this.timeout(20_000);
  let dir: string;
  let edge: RunningEdge;
  const object = makeKVObject(7, 64);

  const get = (headers?: Record<string, string>): Promise<RawResponse> =>
    signedRequest(edge.url, 'GET', `/kv/${KEY}`, headers ? { headers } : {});
  const stats = async (): Promise<EdgeStats> =>
    JSON.parse((await signedRequest(edge.url, 'GET', '/stats')).body.toString('utf8')) as EdgeStats;
  const start = async (shm: boolean): Promise<void> => {
    edge = await startEdge({
      port: 0,
      diskPath: join(dir, 'disk'),
      memoryBytes: '4MiB',
      diskBytes: '8MiB',
      originUrl: `file:${join(dir, 'origin')}`,
      secret: TEST_EDGE_SECRET,
      ...(shm ? { shmDir: join(dir, 'shm') } : {}),
    });
    const put = await signedRequest(edge.url, 'PUT', `/kv/${KEY}`, { body: object });
    expect(put.status).to.equal(201);
    await edge.shm?.settled();
  };

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'kdn-mirrored-'));
    await mkdir(join(dir, 'shm'));
  });
  afterEach(async () => {
    await edge?.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('drops the bytes once the file is written and answers 200, 206, 304 and HEAD from the file', async () => {
    await start(true);
    const memory = (await stats()).memory;
    expect(memory).to.include({ objects: 1, bytes: object.length, heapBytes: 0 });

    const whole = await get();
    expect(whole.status).to.equal(200);
    expect(whole.headers[EDGE_HEADERS.cacheStatus]).to.contain('detail=memory');
    expect(whole.body.equals(object)).to.equal(true);
    const etag = String(whole.headers[EDGE_HEADERS.etag]);

    const part = await get({ [EDGE_HEADERS.range]: 'bytes=100-4195' });
    expect(part.status).to.equal(206);
    expect(part.headers[EDGE_HEADERS.contentRange]).to.equal(`bytes 100-4195/${object.length}`);
    expect(part.body.equals(object.subarray(100, 4196))).to.equal(true);
    const tail = await get({ [EDGE_HEADERS.range]: 'bytes=-10' });
    expect(tail.body.equals(object.subarray(object.length - 10))).to.equal(true);

    expect((await get({ [EDGE_HEADERS.ifNoneMatch]: etag })).status).to.equal(304);
    const head = await signedRequest(edge.url, 'HEAD', `/kv/${KEY}`);
    expect(head.status).to.equal(200);
    expect(head.headers[EDGE_HEADERS.contentLength]).to.equal(String(object.length));
    const after = await stats();
    expect(after.served.bytesServed).to.equal(object.length + 4096 + 10);
    expect(after.memory.hits).to.equal(5);
  });

  it('keeps the bytes in memory without a mirror, and where the file could not be written', async () => {
    await start(false);
    expect((await stats()).memory).to.include({ bytes: object.length, heapBytes: object.length });
    await edge.close();

    await start(true);
    // The mirror's folder is gone: the next write of the object fails, so the tier keeps its bytes.
    await rm(edge.shm!.dir, { recursive: true, force: true });
    await signedRequest(edge.url, 'DELETE', `/kv/${KEY}`);
    expect((await get()).status).to.equal(200);
    await edge.shm!.settled();
    const s = await stats();
    expect(s.shm!.writeErrors).to.equal(1);
    expect(s.memory).to.include({ objects: 1, heapBytes: object.length });
    const hit = await get();
    expect(hit.headers[EDGE_HEADERS.cacheStatus]).to.contain('detail=memory');
    expect(hit.body.equals(object)).to.equal(true);
  });

  it('answers every GET with its own object while evictions churn the tier and its files', async () => {
    const objects = Array.from({ length: 8 }, (_, i) => makeKVObject(20 + i, 64));
    edge = await startEdge({
      port: 0,
      diskPath: join(dir, 'disk'),
      // Room for about three objects: most GETs evict another object and its file.
      memoryBytes: objects[0]!.length * 3 + 100,
      diskBytes: '8MiB',
      originUrl: `file:${join(dir, 'origin')}`,
      secret: TEST_EDGE_SECRET,
      shmDir: join(dir, 'shm'),
    });
    const keyOf = (i: number): string => `kv/mirrored/doc/chunk-${String(i).padStart(4, '0')}.kv`;
    for (const [i, body] of objects.entries())
      expect((await signedRequest(edge.url, 'PUT', `/kv/${keyOf(i)}`, { body })).status).to.equal(201);
    for (let round = 0; round < 10; round++) {
      // Every key each round, in an order that changes: a mix of hits, collapsed misses and evictions.
      const asked = Array.from({ length: 24 }, (_, n) => (n * 3 + round * 5 + (n % 4 === 0 ? 1 : 0)) % objects.length);
      const answers = await Promise.all(asked.map((i) => signedRequest(edge.url, 'GET', `/kv/${keyOf(i)}`)));
      for (const [n, answer] of answers.entries()) {
        expect(answer.status).to.equal(200);
        expect(answer.body.equals(objects[asked[n]!]!), `round ${round}, object ${asked[n]}`).to.equal(true);
      }
    }
    await edge.shm!.settled();
    const s = await stats();
    expect(s.memory.evictions).to.be.greaterThan(10);
    expect(s.memory.heapBytes).to.equal(0);
  });

  it('never serves a file it did not write: a replaced file sends the request below memory and is written again', async () => {
    await start(true);
    const file = join(edge.shm!.dir, shmObjectName(KEY));
    const damaged = Buffer.from(await readFile(file));
    damaged[damaged.length - 1]! ^= 0xff;
    await writeFile(`${file}.tmp`, damaged);
    await rename(`${file}.tmp`, file);

    const answer = await get();
    expect(answer.status).to.equal(200);
    expect(answer.headers[EDGE_HEADERS.cacheStatus]).to.contain('detail=disk');
    expect(answer.body.equals(object)).to.equal(true);
    await edge.shm!.settled();
    expect((await readFile(file)).equals(object)).to.equal(true);
    expect((await stats()).memory).to.include({ objects: 1, heapBytes: 0 });
    const again = await get();
    expect(again.headers[EDGE_HEADERS.cacheStatus]).to.contain('detail=memory');
    expect(again.body.equals(object)).to.equal(true);
  });
});
