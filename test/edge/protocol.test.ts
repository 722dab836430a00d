import { expect } from 'chai';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  CACHE_STATUS,
  DeleteResponse,
  EDGE_HEADERS,
  EDGE_PATHS,
  EdgeStats,
  ErrorBody,
  Health,
  PutResponse,
  ShmInfo,
  WarmLine,
  WarmProgress,
  WarmSummary,
  deletePath,
  describeRoutes,
  edgeRouteOf,
  kvPath,
  parseCacheStatus,
} from '../../edge/protocol.ts';
import { startEdge, type RunningEdge } from '../../edge/server/main.ts';
import { openStore } from '../../storage/open-store.ts';
import { CountingStore, TEST_EDGE_SECRET, httpRequest, makeKVObject, signedRequest } from './helpers.ts';

const json = (body: Buffer): unknown => JSON.parse(body.toString('utf8'));

describe('edge protocol: what a real edge sends matches the schemas both sides share', () => {
  let originDir: string;
  let diskPath: string;
  let origin: CountingStore;
  let edge: RunningEdge;

  before(async () => {
    originDir = await mkdtemp(join(tmpdir(), 'kdn-edge-protocol-origin-'));
    diskPath = await mkdtemp(join(tmpdir(), 'kdn-edge-protocol-disk-'));
    origin = new CountingStore(openStore(`file:${originDir}`));
    edge = await startEdge({ port: 0, diskPath, memoryBytes: '1MiB', diskBytes: '4MiB', secret: TEST_EDGE_SECRET }, { origin });
  });

  after(async () => {
    await edge.close();
    await origin.close();
    await rm(originDir, { recursive: true, force: true });
    await rm(diskPath, { recursive: true, force: true });
  });

  it('PUT, GET, DELETE and /warm answer with PutResponse, the object headers, DeleteResponse and WarmLine lines', async () => {
    const key = 'kv/s01/doc/chunk-0001.kv';
    const object = makeKVObject(3);
    const put = await signedRequest(edge.url, 'PUT', kvPath(key), { body: object });
    expect(put.status).to.equal(201);
    expect(PutResponse.parse(json(put.body))).to.deep.equal({ key, size: object.length, etag: put.headers[EDGE_HEADERS.etag] });

    const got = await signedRequest(edge.url, 'GET', kvPath(key));
    expect(got.status).to.equal(200);
    expect(got.headers[EDGE_HEADERS.cacheStatus]).to.equal(CACHE_STATUS.memory);
    expect(parseCacheStatus(got.headers[EDGE_HEADERS.cacheStatus] as string)).to.equal('memory');

    const absent = 'kv/s01/doc/chunk-0002.kv';
    const warm = await signedRequest(edge.url, 'POST', EDGE_PATHS.warm, { body: JSON.stringify({ keys: [key, absent] }) });
    const lines = warm.body
      .toString('utf8')
      .trim()
      .split('\n')
      .map((line) => WarmLine.parse(JSON.parse(line)));
    expect(
      lines
        .slice(0, -1)
        .map((line) => WarmProgress.parse(line).status)
        .sort(),
    ).to.deep.equal(['failed', 'present']);
    expect(WarmSummary.parse(lines.at(-1))).to.include({ keys: 2, present: 1, failed: 1 });

    const deleted = await signedRequest(edge.url, 'DELETE', deletePath(key, { origin: true }));
    expect(DeleteResponse.parse(json(deleted.body))).to.deep.equal({ key, deleted: { memory: true, disk: true, origin: true } });
  });

  it('a DELETE query outside DeleteQuery is 400 with a hint, and nothing is deleted', async () => {
    const key = 'kv/s01/doc/chunk-0003.kv';
    await origin.inner.put(key, makeKVObject(4));
    const deletesBefore = origin.deletes;
    for (const query of ['origin=maybe', 'origin=true&also=1', 'purge=all']) {
      const res = await signedRequest(edge.url, 'DELETE', `${kvPath(key)}?${query}`);
      expect(res.status, query).to.equal(400);
      const body = ErrorBody.parse(json(res.body));
      expect(body.error.code, query).to.equal('INVALID_ARGUMENT');
      expect(body.error.hint, query).to.contain('origin=true|false');
    }
    expect(origin.deletes).to.equal(deletesBefore);
    expect(await origin.inner.head(key)).to.not.equal(null);
  });

  it('/stats is EdgeStats and /healthz is Health', async () => {
    const stats = EdgeStats.parse(json((await signedRequest(edge.url, 'GET', EDGE_PATHS.stats)).body));
    expect(stats.served.requests).to.be.greaterThan(0);
    expect(Health.parse(json((await httpRequest(edge.url, 'GET', EDGE_PATHS.healthz)).body))).to.deep.equal({ status: 'ok' });
  });

  it('/shm needs a token and is ShmInfo (no folder on this edge)', async () => {
    expect((await httpRequest(edge.url, 'GET', EDGE_PATHS.shm)).status).to.equal(401);
    expect(ShmInfo.parse(json((await signedRequest(edge.url, 'GET', EDGE_PATHS.shm)).body))).to.deep.equal({ dir: null });
  });

  it('names routes by path alone', () => {
    expect(edgeRouteOf(kvPath('kv/a.kv'))).to.equal('kv');
    expect(edgeRouteOf(EDGE_PATHS.warm)).to.equal('warm');
    expect(edgeRouteOf('/kv')).to.equal(undefined);
    expect(edgeRouteOf('/warm/')).to.equal(undefined);
    expect(describeRoutes()).to.equal('GET|HEAD|PUT|DELETE /kv/<key>, POST /warm, GET /stats, GET /metrics, GET|HEAD /healthz, GET /shm');
    expect(deletePath('kv/a.kv')).to.equal('/kv/kv/a.kv');
    expect(deletePath('kv/a.kv', { origin: true })).to.equal('/kv/kv/a.kv?origin=true');
  });
});
