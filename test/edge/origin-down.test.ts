import { expect } from 'chai';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startEdge, type RunningEdge } from '../../edge/server/main.ts';
import { openStore } from '../../storage/open-store.ts';
import { startS3rver, type RunningS3rver } from '../support/s3rver.ts';
import { TEST_EDGE_SECRET, errorCode, makeKVObject, signedRequest } from './helpers.ts';

describe('edge with an S3 origin that goes down', () => {
  let s3: RunningS3rver;
  let edge: RunningEdge;
  let diskPath: string;

  before(async () => {
    s3 = await startS3rver();
    diskPath = await mkdtemp(join(tmpdir(), 'kdn-edge-disk-'));
    edge = await startEdge({
      port: 0,
      originUrl: s3.url,
      diskPath,
      memoryBytes: 24_000,
      diskBytes: '4MiB',
      originTimeoutMs: 1_500,
      secret: TEST_EDGE_SECRET,
    });
  });

  after(async () => {
    await edge.close();
    await s3.stop();
    await rm(diskPath, { recursive: true, force: true });
  });

  it('keeps serving what it holds and answers a miss with 502/504', async () => {
    // Objects of ~17 KB against a 24 KB memory budget: the second PUT pushes the first down to the disk tier.
    const onDisk = makeKVObject(1, 64);
    const inMemory = makeKVObject(2, 64);
    const uncached = makeKVObject(3, 64);
    expect((await signedRequest(edge.url, 'PUT', '/kv/kv/s3/disk.kv', { body: onDisk })).status).to.equal(201);
    expect((await signedRequest(edge.url, 'PUT', '/kv/kv/s3/memory.kv', { body: inMemory })).status).to.equal(201);
    const direct = openStore(s3.url);
    await direct.put('kv/s3/uncached.kv', uncached);
    expect((await direct.get('kv/s3/disk.kv')).equals(onDisk)).to.equal(true);
    await direct.close();
    await s3.stop();

    const memoryHit = await signedRequest(edge.url, 'GET', '/kv/kv/s3/memory.kv');
    expect(memoryHit.status).to.equal(200);
    expect(memoryHit.body.equals(inMemory)).to.equal(true);
    expect(memoryHit.headers['cache-status']).to.equal('kdn-edge; hit; detail=memory');
    const diskHit = await signedRequest(edge.url, 'GET', '/kv/kv/s3/disk.kv');
    expect(diskHit.status).to.equal(200);
    expect(diskHit.body.equals(onDisk)).to.equal(true);
    expect(diskHit.headers['cache-status']).to.equal('kdn-edge; hit; detail=disk');

    const started = Date.now();
    const miss = await signedRequest(edge.url, 'GET', '/kv/kv/s3/uncached.kv');
    const elapsedMs = Date.now() - started;
    console.log(`      miss with the origin down answered ${miss.status} ${errorCode(miss)} after ${elapsedMs} ms`);
    expect(miss.status).to.be.oneOf([502, 504]);
    expect(errorCode(miss)).to.be.oneOf(['ORIGIN_UNAVAILABLE', 'ORIGIN_TIMEOUT']);

    const put = await signedRequest(edge.url, 'PUT', '/kv/kv/s3/new.kv', { body: makeKVObject(4) });
    expect(put.status).to.be.oneOf([502, 504]);
    expect((await signedRequest(edge.url, 'GET', '/kv/kv/s3/new.kv')).status).to.be.oneOf([502, 504]);

    const health = await signedRequest(edge.url, 'GET', '/healthz');
    expect(health.status).to.equal(200);
  });
});
