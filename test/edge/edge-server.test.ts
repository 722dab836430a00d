import { expect } from 'chai';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openStore } from '../../storage/open-store.ts';
import type { EdgeConfigInput } from '../../edge/server/config.ts';
import { startEdge, type RunningEdge } from '../../edge/server/main.ts';
import type { EdgeStats } from '../../edge/protocol.ts';
import { CountingStore, TEST_EDGE_SECRET, errorCode, makeKVObject, signedRequest, tokenHeader, type RawResponse } from './helpers.ts';

interface TestEdge {
  edge: RunningEdge;
  origin: CountingStore;
  diskPath: string;
  get(key: string, headers?: Record<string, string>): Promise<RawResponse>;
  stats(): Promise<EdgeStats>;
  close(): Promise<void>;
}

const cleanups: (() => Promise<void>)[] = [];

/** An in-process edge over a fresh filesystem origin, with the origin wrapped to count reads. */
async function startTestEdge(config: Partial<EdgeConfigInput> = {}, shared?: { originDir?: string; diskPath?: string }): Promise<TestEdge> {
  const originDir = shared?.originDir ?? (await mkdtemp(join(tmpdir(), 'kdn-edge-origin-')));
  const diskPath = shared?.diskPath ?? (await mkdtemp(join(tmpdir(), 'kdn-edge-disk-')));
  const origin = new CountingStore(openStore(`file:${originDir}`));
  const edge = await startEdge(
    { port: 0, diskPath, memoryBytes: '1MiB', diskBytes: '4MiB', secret: TEST_EDGE_SECRET, ...config },
    { origin },
  );
  let closed = false;
  const close = async (): Promise<void> => {
    if (closed) return;
    closed = true;
    await edge.close();
  };
  cleanups.push(async () => {
    await close();
    await origin.close();
    if (!shared?.originDir) await rm(originDir, { recursive: true, force: true });
    if (!shared?.diskPath) await rm(diskPath, { recursive: true, force: true });
  });
  return {
    edge,
    origin,
    diskPath,
    get: (key, headers) => signedRequest(edge.url, 'GET', `/kv/${key}`, headers ? { headers } : {}),
    stats: async () => JSON.parse((await signedRequest(edge.url, 'GET', '/stats')).body.toString('utf8')) as EdgeStats,
    close,
  };
}

afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!();
});

describe('edge server', () => {
  describe('tiers', () => {
    it('fills from the origin, then serves from memory', async () => {
      const t = await startTestEdge();
      const object = makeKVObject(1);
      await t.origin.inner.put('kv/ns/doc/a.kv', object);

      const first = await t.get('kv/ns/doc/a.kv');
      expect(first.status).to.equal(200);
      expect(first.body.equals(object)).to.equal(true);
      expect(first.headers['cache-status']).to.equal('kdn-edge; fwd=miss; stored; detail=origin');
      expect(first.headers['content-length']).to.equal(String(object.length));
      expect(first.headers['accept-ranges']).to.equal('bytes');

      const second = await t.get('kv/ns/doc/a.kv');
      expect(second.status).to.equal(200);
      expect(second.body.equals(object)).to.equal(true);
      expect(second.headers['cache-status']).to.equal('kdn-edge; hit; detail=memory');
      expect(second.headers.etag).to.equal(first.headers.etag);
      expect(t.origin.gets).to.equal(1);
    });

    it('serves from disk after memory eviction, and promotes back to memory', async () => {
      const objects = [0, 1, 2].map((seed) => makeKVObject(seed, 64));
      // Room for two objects in memory, all three on disk.
      const t = await startTestEdge({ memoryBytes: Math.floor(objects[0]!.length * 2.5), diskBytes: '1MiB' });
      for (const [i, object] of objects.entries()) await t.origin.inner.put(`kv/k/${i}.kv`, object);

      for (let i = 0; i < 3; i += 1) expect((await t.get(`kv/k/${i}.kv`)).headers['cache-status']).to.include('detail=origin');
      expect(t.origin.gets).to.equal(3);

      const fromDisk = await t.get('kv/k/0.kv');
      expect(fromDisk.status).to.equal(200);
      expect(fromDisk.headers['cache-status']).to.equal('kdn-edge; hit; detail=disk');
      expect(fromDisk.body.equals(objects[0]!)).to.equal(true);
      expect((await t.get('kv/k/0.kv')).headers['cache-status']).to.equal('kdn-edge; hit; detail=memory');
      expect(t.origin.gets).to.equal(3);

      const stats = await t.stats();
      expect(stats.memory.evictions).to.be.greaterThan(0);
      expect(stats.memory.bytes).to.be.at.most(stats.memory.budgetBytes);
      expect(stats.disk.objects).to.equal(3);
      expect(stats.disk.hits).to.equal(1);
    });

    it('refetches from the origin after disk eviction, keeping the disk under its budget', async () => {
      const objects = [0, 1, 2].map((seed) => makeKVObject(seed, 64));
      const t = await startTestEdge({ memoryBytes: 0, diskBytes: Math.floor(objects[0]!.length * 2.5) });
      for (const [i, object] of objects.entries()) await t.origin.inner.put(`kv/k/${i}.kv`, object);
      for (let i = 0; i < 3; i += 1) await t.get(`kv/k/${i}.kv`);

      expect((await t.get('kv/k/2.kv')).headers['cache-status']).to.equal('kdn-edge; hit; detail=disk');
      const evicted = await t.get('kv/k/0.kv');
      expect(evicted.headers['cache-status']).to.equal('kdn-edge; fwd=miss; stored; detail=origin');
      expect(evicted.body.equals(objects[0]!)).to.equal(true);
      expect(t.origin.gets).to.equal(4);

      const stats = await t.stats();
      expect(stats.disk.bytes).to.be.at.most(stats.disk.budgetBytes);
      expect(stats.disk.objects).to.equal(2);
      expect(stats.disk.evictions).to.be.at.least(2);
      expect(stats.memory.objects).to.equal(0);
    });

    it('rebuilds the disk index from its folder on start', async () => {
      const originDir = await mkdtemp(join(tmpdir(), 'kdn-edge-origin-'));
      const diskPath = await mkdtemp(join(tmpdir(), 'kdn-edge-disk-'));
      cleanups.push(
        () => rm(originDir, { recursive: true, force: true }),
        () => rm(diskPath, { recursive: true, force: true }),
      );
      const object = makeKVObject(5);
      const first = await startTestEdge({}, { originDir, diskPath });
      await first.origin.inner.put('kv/persist/me.kv', object);
      await first.get('kv/persist/me.kv');
      await first.close();

      const second = await startTestEdge({}, { originDir, diskPath });
      expect((await second.stats()).disk.objects).to.equal(1);
      const got = await second.get('kv/persist/me.kv');
      expect(got.headers['cache-status']).to.equal('kdn-edge; hit; detail=disk');
      expect(got.body.equals(object)).to.equal(true);
      expect(second.origin.gets).to.equal(0);
    });

    it('refuses a second edge on the same disk path', async () => {
      const t = await startTestEdge();
      const err = await startEdge({ port: 0, diskPath: t.diskPath, secret: TEST_EDGE_SECRET }, { origin: t.origin }).then(
        () => null,
        (e: unknown) => e,
      );
      expect(err).to.have.property('code', 'CONFLICT');
    });

    it('refuses a port already in use with CONFLICT', async () => {
      const t = await startTestEdge();
      const diskPath = await mkdtemp(join(tmpdir(), 'kdn-edge-disk-'));
      cleanups.push(() => rm(diskPath, { recursive: true, force: true }));
      const err = await startEdge({ port: t.edge.port, diskPath, secret: TEST_EDGE_SECRET }, { origin: t.origin }).then(
        () => null,
        (e: unknown) => e,
      );
      expect(err).to.have.property('code', 'CONFLICT');
      // The failed start released its disk lock.
      const next = await startEdge({ port: 0, diskPath, secret: TEST_EDGE_SECRET }, { origin: t.origin });
      await next.close();
    });

    it('drops a corrupt disk file and refetches it from the origin', async () => {
      const t = await startTestEdge({ memoryBytes: 0 });
      const object = makeKVObject(9, 64);
      await t.origin.inner.put('kv/rot/a.kv', object);
      await t.get('kv/rot/a.kv');
      const shards = await readdir(join(t.diskPath, 'objects'));
      const file = join(t.diskPath, 'objects', shards[0]!, (await readdir(join(t.diskPath, 'objects', shards[0]!)))[0]!);
      const bytes = await readFile(file);
      bytes[bytes.length - 100]! ^= 0xff;
      await writeFile(file, bytes);

      const got = await t.get('kv/rot/a.kv');
      expect(got.status).to.equal(200);
      expect(got.headers['cache-status']).to.equal('kdn-edge; fwd=miss; stored; detail=origin');
      expect(got.body.equals(object)).to.equal(true);
      expect((await t.stats()).disk.corruptDropped).to.equal(1);
      expect((await readFile(file)).equals(object)).to.equal(true);
    });
  });

  describe('origin behaviour', () => {
    it('coalesces 20 concurrent misses of one key into one origin fetch', async () => {
      const t = await startTestEdge();
      const object = makeKVObject(2, 256);
      await t.origin.inner.put('kv/hot/key.kv', object);
      t.origin.delayMs = 300;
      const answers = await Promise.all(Array.from({ length: 20 }, () => t.get('kv/hot/key.kv')));
      expect(t.origin.gets).to.equal(1);
      for (const answer of answers) {
        expect(answer.status).to.equal(200);
        expect(answer.body.equals(object)).to.equal(true);
      }
      const statuses = answers.map((answer) => answer.headers['cache-status']);
      expect(statuses.filter((s) => s === 'kdn-edge; fwd=miss; stored; detail=origin')).to.have.length(1);
      expect(statuses.filter((s) => s === 'kdn-edge; fwd=miss; stored; collapsed; detail=origin')).to.have.length(19);
      expect((await t.stats()).origin.collapsed).to.equal(19);
    });

    it('does not let an origin fetch overtaken by a PUT store the older object', async () => {
      const t = await startTestEdge();
      const older = makeKVObject(50);
      const newer = makeKVObject(51);
      await t.origin.inner.put('kv/race/key.kv', older);
      t.origin.delayMs = 300;
      const slowGet = t.get('kv/race/key.kv');
      await new Promise((resolve) => setTimeout(resolve, 100));
      expect((await signedRequest(t.edge.url, 'PUT', '/kv/kv/race/key.kv', { body: newer })).status).to.equal(201);
      expect((await slowGet).body.equals(older)).to.equal(true);
      const after = await t.get('kv/race/key.kv');
      expect(after.headers['cache-status']).to.equal('kdn-edge; hit; detail=memory');
      expect(after.body.equals(newer)).to.equal(true);
    });

    it('remembers misses for the negative TTL', async () => {
      const t = await startTestEdge({ negativeTtlMs: 300 });
      const first = await t.get('kv/not/there.kv');
      expect(first.status).to.equal(404);
      expect(errorCode(first)).to.equal('NOT_FOUND');
      expect(first.headers['cache-status']).to.equal('kdn-edge; fwd=miss; detail=not-found');
      const second = await t.get('kv/not/there.kv');
      expect(second.status).to.equal(404);
      expect(second.headers['cache-status']).to.equal('kdn-edge; hit; detail=negative');
      expect(t.origin.gets).to.equal(1);

      await new Promise((resolve) => setTimeout(resolve, 400));
      expect((await t.get('kv/not/there.kv')).status).to.equal(404);
      expect(t.origin.gets).to.equal(2);

      // A PUT through the edge ends the negative entry at once.
      const object = makeKVObject(3);
      expect((await signedRequest(t.edge.url, 'PUT', '/kv/kv/not/there.kv', { body: object })).status).to.equal(201);
      const found = await t.get('kv/not/there.kv');
      expect(found.status).to.equal(200);
      expect(found.body.equals(object)).to.equal(true);
      expect((await t.stats()).origin.negativeHits).to.equal(1);
    });

    it('reports a corrupt origin object as 422 KV_CORRUPT and neither serves nor caches it', async () => {
      const t = await startTestEdge();
      const object = makeKVObject(4, 64);
      object[object.length - 10]! ^= 0x01;
      await t.origin.inner.put('kv/bad/object.kv', object);
      for (let i = 1; i <= 2; i += 1) {
        const got = await t.get('kv/bad/object.kv');
        expect(got.status).to.equal(422);
        expect(errorCode(got)).to.equal('KV_CORRUPT');
        expect(got.headers['cache-status']).to.equal('kdn-edge; fwd=miss; detail=origin-corrupt');
        expect(t.origin.gets).to.equal(i);
      }
      const stats = await t.stats();
      expect(stats.origin.corrupt).to.equal(2);
      expect(stats.memory.objects + stats.disk.objects).to.equal(0);
    });

    it('answers 504 when the origin is too slow, while cached objects are still served', async () => {
      const t = await startTestEdge({ originTimeoutMs: 200 });
      const object = makeKVObject(6);
      await t.origin.inner.put('kv/cached/one.kv', object);
      await t.origin.inner.put('kv/slow/one.kv', makeKVObject(7));
      await t.get('kv/cached/one.kv');
      t.origin.delayMs = 2_000;
      const slow = await t.get('kv/slow/one.kv');
      expect(slow.status).to.equal(504);
      expect(errorCode(slow)).to.equal('ORIGIN_TIMEOUT');
      expect(slow.headers['cache-status']).to.equal('kdn-edge; fwd=miss; detail=origin-timeout');
      const cached = await t.get('kv/cached/one.kv');
      expect(cached.status).to.equal(200);
      expect(cached.body.equals(object)).to.equal(true);
      expect((await t.stats()).origin.timeouts).to.equal(1);
    });
  });

  describe('GET and HEAD', () => {
    it('answers Cache-Control: only-if-cached from its tiers alone, with 504 when none holds the object', async () => {
      const t = await startTestEdge({ memoryBytes: 0 });
      const object = makeKVObject(11);
      await t.origin.inner.put('kv/probe.kv', object);
      const miss = await t.get('kv/probe.kv', { 'cache-control': 'only-if-cached' });
      expect(miss.status).to.equal(504);
      expect(miss.headers['cache-status']).to.equal('kdn-edge; fwd=miss; detail=not-cached');
      expect(errorCode(miss)).to.equal('TIMEOUT');
      expect(t.origin.gets).to.equal(0);
      // Asking did not fill the edge: a plain GET still goes to the origin, after which the disk tier answers.
      expect((await t.get('kv/probe.kv')).headers['cache-status']).to.equal('kdn-edge; fwd=miss; stored; detail=origin');
      const hit = await t.get('kv/probe.kv', { 'cache-control': 'max-age=0, only-if-cached' });
      expect(hit.status).to.equal(200);
      expect(hit.headers['cache-status']).to.equal('kdn-edge; hit; detail=disk');
      expect(hit.body.equals(object)).to.equal(true);
      expect(t.origin.gets).to.equal(1);
    });

    it('answers If-None-Match with 304 and a changed tag with the object', async () => {
      const t = await startTestEdge();
      const object = makeKVObject(8);
      await t.origin.inner.put('kv/tagged.kv', object);
      const first = await t.get('kv/tagged.kv');
      const etag = first.headers.etag!;
      expect(etag).to.match(/^"[0-9a-f]{32}"$/);
      const notModified = await t.get('kv/tagged.kv', { 'if-none-match': etag });
      expect(notModified.status).to.equal(304);
      expect(notModified.body.length).to.equal(0);
      expect(notModified.headers.etag).to.equal(etag);
      expect((await t.get('kv/tagged.kv', { 'if-none-match': `"other", W/${etag}` })).status).to.equal(304);
      const changed = await t.get('kv/tagged.kv', { 'if-none-match': '"something-else"' });
      expect(changed.status).to.equal(200);
      expect(changed.body.equals(object)).to.equal(true);
    });

    it('serves byte ranges', async () => {
      const t = await startTestEdge();
      const object = makeKVObject(10, 64);
      await t.origin.inner.put('kv/ranged.kv', object);
      const size = object.length;

      const head = await t.get('kv/ranged.kv', { range: 'bytes=0-99' });
      expect(head.status).to.equal(206);
      expect(head.headers['content-range']).to.equal(`bytes 0-99/${size}`);
      expect(head.body.equals(object.subarray(0, 100))).to.equal(true);

      const suffix = await t.get('kv/ranged.kv', { range: 'bytes=-10' });
      expect(suffix.status).to.equal(206);
      expect(suffix.body.equals(object.subarray(size - 10))).to.equal(true);

      const open = await t.get('kv/ranged.kv', { range: 'bytes=100-' });
      expect(open.body.equals(object.subarray(100))).to.equal(true);
      expect(open.headers['content-length']).to.equal(String(size - 100));

      const clamped = await t.get('kv/ranged.kv', { range: `bytes=${size - 5}-${size + 1000}` });
      expect(clamped.headers['content-range']).to.equal(`bytes ${size - 5}-${size - 1}/${size}`);

      const outside = await t.get('kv/ranged.kv', { range: `bytes=${size}-` });
      expect(outside.status).to.equal(416);
      expect(errorCode(outside)).to.equal('RANGE_NOT_SATISFIABLE');
      expect(outside.headers['content-range']).to.equal(`bytes */${size}`);

      expect((await t.get('kv/ranged.kv', { range: 'bytes=0-1,5-9' })).status).to.equal(200);
      expect((await t.get('kv/ranged.kv', { range: 'bytes=0-9', 'if-range': '"stale"' })).status).to.equal(200);
      const etag = head.headers.etag!;
      expect((await t.get('kv/ranged.kv', { range: 'bytes=0-9', 'if-range': etag })).status).to.equal(206);
    });

    it('answers HEAD with the headers of GET and no body', async () => {
      const t = await startTestEdge();
      const object = makeKVObject(11);
      await t.origin.inner.put('kv/headed.kv', object);
      const head = await signedRequest(t.edge.url, 'HEAD', '/kv/kv/headed.kv');
      expect(head.status).to.equal(200);
      expect(head.body.length).to.equal(0);
      expect(head.headers['content-length']).to.equal(String(object.length));
      expect(head.headers['cache-status']).to.equal('kdn-edge; fwd=miss; stored; detail=origin');
      expect((await signedRequest(t.edge.url, 'HEAD', '/kv/kv/headed.kv')).headers['cache-status']).to.equal(
        'kdn-edge; hit; detail=memory',
      );
      expect((await signedRequest(t.edge.url, 'HEAD', '/kv/kv/absent.kv')).status).to.equal(404);
    });

    it('rejects bad keys with 400 INVALID_KEY', async () => {
      const t = await startTestEdge();
      for (const path of ['/kv/a/../b', '/kv/a//b', '/kv/has%20space', '/kv/%ZZ', '/kv/', '/kv/x/.', `/kv/${'k'.repeat(600)}`]) {
        const got = await signedRequest(t.edge.url, 'GET', path);
        expect(got.status, path).to.equal(400);
        expect(errorCode(got), path).to.equal('INVALID_KEY');
      }
      expect((await signedRequest(t.edge.url, 'PUT', '/kv/a/../b', { body: makeKVObject(1) })).status).to.equal(400);
      expect(t.origin.gets + t.origin.puts).to.equal(0);
    });

    it('answers unknown routes with 404 and wrong methods with 405 (every route: test/edge/methods.test.ts)', async () => {
      const t = await startTestEdge();
      expect(errorCode(await signedRequest(t.edge.url, 'GET', '/nope'))).to.equal('NOT_FOUND');
      const wrong = await signedRequest(t.edge.url, 'POST', '/kv/kv/a.kv');
      expect(wrong.status).to.equal(405);
      expect(errorCode(wrong)).to.equal('METHOD_NOT_ALLOWED');
      expect(wrong.headers.allow).to.equal('GET, HEAD, PUT, DELETE');
      const health = await signedRequest(t.edge.url, 'GET', '/healthz');
      expect(health.status).to.equal(200);
      expect(JSON.parse(health.body.toString())).to.deep.equal({ status: 'ok' });
    });

    it('closes the connection of a client that stalls mid-request', async () => {
      const t = await startTestEdge({ headersTimeoutMs: 200, requestTimeoutMs: 400 });
      const { port } = new URL(t.edge.url);
      const socket = connect(Number(port), '127.0.0.1');
      let received = '';
      socket.on('data', (chunk: Buffer) => (received += chunk.toString()));
      const signed = Object.entries(tokenHeader('PUT', '/kv/kv/slow.kv', TEST_EDGE_SECRET, 'x'.repeat(1000)))
        .map(([name, value]) => `${name}: ${value}\r\n`)
        .join('');
      socket.write(`PUT /kv/kv/slow.kv HTTP/1.1\r\nHost: x\r\n${signed}Content-Length: 1000\r\n\r\nonly-a-little`);
      await new Promise((resolve) => socket.once('close', resolve));
      expect(received).to.match(/^HTTP\/1\.1 408/);
      expect(t.origin.puts).to.equal(0);
    });
  });

  describe('PUT and DELETE', () => {
    it('stores a verified object in the tiers and at the origin', async () => {
      const t = await startTestEdge();
      const object = makeKVObject(12, 64);
      const put = await signedRequest(t.edge.url, 'PUT', '/kv/kv/up/loaded.kv', { body: object });
      expect(put.status).to.equal(201);
      const answer = JSON.parse(put.body.toString()) as { key: string; size: number; etag: string };
      expect(answer).to.include({ key: 'kv/up/loaded.kv', size: object.length });
      expect(put.headers.etag).to.equal(answer.etag);
      expect((await t.origin.inner.get('kv/up/loaded.kv')).equals(object)).to.equal(true);
      const got = await t.get('kv/up/loaded.kv');
      expect(got.headers['cache-status']).to.equal('kdn-edge; hit; detail=memory');
      expect(got.headers.etag).to.equal(answer.etag);
      expect((await t.stats()).disk.objects).to.equal(1);
      expect(t.origin.gets).to.equal(0);

      const chunked = await signedRequest(t.edge.url, 'PUT', '/kv/kv/up/chunked.kv', { body: object, chunked: true });
      expect(chunked.status).to.equal(201);
    });

    it('refuses an oversized body with 413 and keeps nothing', async () => {
      const t = await startTestEdge({ maxBodyBytes: '64KiB' });
      const object = makeKVObject(13, 512);
      expect(object.length).to.be.greaterThan(64 * 1024);
      for (const chunked of [false, true]) {
        const put = await signedRequest(t.edge.url, 'PUT', '/kv/kv/too/big.kv', { body: object, chunked });
        expect(put.status).to.equal(413);
        expect(errorCode(put)).to.equal('PAYLOAD_TOO_LARGE');
      }
      expect(t.origin.puts).to.equal(0);
      expect(await t.origin.inner.head('kv/too/big.kv')).to.equal(null);
      expect((await t.get('kv/too/big.kv')).status).to.equal(404);
    });

    it('refuses an invalid KV object with 422 and keeps nothing at any tier or the origin', async () => {
      const t = await startTestEdge();
      const corrupt = makeKVObject(14, 64);
      corrupt[corrupt.length - 1]! ^= 0x80;
      for (const body of [corrupt, Buffer.from('not a kv object at all'), corrupt.subarray(0, 1000)]) {
        const put = await signedRequest(t.edge.url, 'PUT', '/kv/kv/invalid.kv', { body });
        expect(put.status).to.equal(422);
        expect(errorCode(put)).to.match(/^KV_/);
      }
      expect(t.origin.puts).to.equal(0);
      expect(await t.origin.inner.head('kv/invalid.kv')).to.equal(null);
      const stats = await t.stats();
      expect(stats.memory.objects + stats.disk.objects).to.equal(0);
      expect((await t.get('kv/invalid.kv')).status).to.equal(404);
    });

    it('purges every tier on DELETE, and the origin with ?origin=true', async () => {
      const t = await startTestEdge();
      const object = makeKVObject(15);
      await signedRequest(t.edge.url, 'PUT', '/kv/kv/gone/soon.kv', { body: object });

      const purge = await signedRequest(t.edge.url, 'DELETE', '/kv/kv/gone/soon.kv');
      expect(purge.status).to.equal(200);
      expect(JSON.parse(purge.body.toString())).to.deep.equal({ key: 'kv/gone/soon.kv', deleted: { memory: true, disk: true } });
      const refetched = await t.get('kv/gone/soon.kv');
      expect(refetched.headers['cache-status']).to.equal('kdn-edge; fwd=miss; stored; detail=origin');
      expect(t.origin.gets).to.equal(1);

      const everywhere = await signedRequest(t.edge.url, 'DELETE', '/kv/kv/gone/soon.kv?origin=true');
      expect(JSON.parse(everywhere.body.toString())).to.deep.equal({
        key: 'kv/gone/soon.kv',
        deleted: { memory: true, disk: true, origin: true },
      });
      expect(await t.origin.inner.head('kv/gone/soon.kv')).to.equal(null);
      expect((await t.get('kv/gone/soon.kv')).status).to.equal(404);

      expect((await signedRequest(t.edge.url, 'DELETE', '/kv/kv/gone/soon.kv?purge=all')).status).to.equal(400);
    });
  });

  describe('warm, stats and metrics', () => {
    it('warms keys from the origin and streams NDJSON progress', async () => {
      const t = await startTestEdge();
      const objects = [20, 21, 22].map((seed) => makeKVObject(seed));
      for (const [i, object] of objects.entries()) await t.origin.inner.put(`kv/w/${i}.kv`, object);
      await t.get('kv/w/0.kv');

      const warm = await signedRequest(t.edge.url, 'POST', '/warm', {
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ keys: ['kv/w/0.kv', 'kv/w/1.kv', 'kv/w/2.kv', 'kv/w/missing.kv'] }),
      });
      expect(warm.status).to.equal(200);
      expect(warm.headers['content-type']).to.include('application/x-ndjson');
      const lines = warm.body
        .toString()
        .trim()
        .split('\n')
        .map((line) => JSON.parse(line) as Record<string, unknown>);
      expect(lines).to.have.length(5);
      const byKey = new Map(lines.slice(0, 4).map((line) => [line['key'], line]));
      expect(byKey.get('kv/w/0.kv')).to.deep.include({ status: 'present', bytes: objects[0]!.length });
      expect(byKey.get('kv/w/1.kv')).to.deep.include({ status: 'warmed', bytes: objects[1]!.length });
      expect(byKey.get('kv/w/2.kv')).to.deep.include({ status: 'warmed', bytes: objects[2]!.length });
      expect(byKey.get('kv/w/missing.kv')).to.deep.include({ status: 'failed', bytes: 0 });
      expect((byKey.get('kv/w/missing.kv')!['error'] as { code: string }).code).to.equal('NOT_FOUND');
      expect(lines[4]).to.deep.equal({
        done: true,
        keys: 4,
        warmed: 2,
        present: 1,
        failed: 1,
        bytes: objects[1]!.length + objects[2]!.length,
      });

      const gets = t.origin.gets;
      expect((await t.get('kv/w/2.kv')).headers['cache-status']).to.equal('kdn-edge; hit; detail=memory');
      expect(t.origin.gets).to.equal(gets);
    });

    it('rejects a bad /warm body with 400 and a hint', async () => {
      const t = await startTestEdge();
      const bodies = [
        'not json',
        '{}',
        '{"keys": []}',
        '{"keys": ["ok", "../bad"]}',
        '{"keys": ["a"], "extra": 1}',
        '{"keys": ["a"], "concurrency": 33}',
      ];
      for (const body of bodies) {
        const got = await signedRequest(t.edge.url, 'POST', '/warm', { body });
        expect(got.status, body).to.equal(400);
        expect(errorCode(got), body).to.be.oneOf(['INVALID_ARGUMENT', 'INVALID_KEY']);
        const { error } = JSON.parse(got.body.toString('utf8')) as { error: { hint?: string } };
        expect(error.hint, body).to.be.a('string').that.is.not.empty;
      }
    });

    it('reports hits, misses, bytes and holdings in /stats and /metrics', async () => {
      const t = await startTestEdge();
      const object = makeKVObject(30, 64);
      await t.origin.inner.put('kv/s/one.kv', object);
      await t.get('kv/s/one.kv');
      await t.get('kv/s/one.kv');
      await t.get('kv/s/absent.kv');

      const stats = await t.stats();
      expect(stats.memory).to.include({ hits: 1, misses: 2, objects: 1, bytes: object.length, budgetBytes: 2 ** 20 });
      expect(stats.disk).to.include({ hits: 0, misses: 2, objects: 1, bytes: object.length });
      expect(stats.origin).to.include({ fetches: 2, found: 1, notFound: 1, bytes: object.length });
      expect(stats.served.bytesServed).to.equal(2 * object.length);
      expect(stats.served.errors).to.equal(1);

      const metrics = await signedRequest(t.edge.url, 'GET', '/metrics');
      expect(metrics.status).to.equal(200);
      expect(metrics.headers['content-type']).to.include('text/plain');
      const text = metrics.body.toString();
      expect(text).to.include('kdn_edge_cache_hits_total{tier="memory"} 1');
      expect(text).to.include('kdn_edge_cache_misses_total{tier="disk"} 2');
      expect(text).to.include('kdn_edge_origin_requests_total{result="found"} 1');
      expect(text).to.include('kdn_edge_origin_requests_total{result="not_found"} 1');
      expect(text).to.include(`kdn_edge_served_bytes_total ${2 * object.length}`);
      expect(text).to.include(`kdn_edge_tier_bytes{tier="memory"} ${object.length}`);
      expect(text).to.include('kdn_edge_tier_objects{tier="disk"} 1');
    });
  });
});
