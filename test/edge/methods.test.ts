import { expect } from 'chai';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { EDGE_HEADERS, ErrorBody, ROUTE_METHODS, kvPath, type EdgeRoute } from '../../edge/protocol.ts';
import { startEdge, type RunningEdge } from '../../edge/server/main.ts';
import { openStore } from '../../storage/open-store.ts';
import { CountingStore, TEST_EDGE_SECRET, httpRequest, makeKVObject, signedRequest, type RawResponse } from './helpers.ts';

/** A request path for each route; the object exists at the origin, so a 405 that touched it would show. */
const KEY = 'kv/s00/doc/chunk-0001.kv';
const PATHS: Record<EdgeRoute, string> = {
  kv: kvPath(KEY),
  warm: '/warm',
  stats: '/stats',
  metrics: '/metrics',
  healthz: '/healthz',
  shm: '/shm',
};
const METHODS = ['GET', 'HEAD', 'PUT', 'DELETE', 'POST', 'PATCH', 'OPTIONS'];

function expect405(res: RawResponse, method: string, route: EdgeRoute): void {
  expect(res.status, `${method} ${PATHS[route]}`).to.equal(405);
  expect(res.headers[EDGE_HEADERS.allow], `${method} ${PATHS[route]}`).to.equal(ROUTE_METHODS[route].join(', '));
  if (method === 'HEAD') {
    expect(res.body.length).to.equal(0);
    return;
  }
  expect(res.headers[EDGE_HEADERS.contentType]).to.match(/^application\/json/);
  const body = ErrorBody.parse(JSON.parse(res.body.toString('utf8')));
  expect(body.error.code).to.equal('METHOD_NOT_ALLOWED');
  expect(body.error.message).to.contain(method).and.contain(PATHS[route]);
  expect(body.error.hint).to.equal(`use ${ROUTE_METHODS[route].join(', ')}`);
}

describe('edge: 405 Method Not Allowed on every route', () => {
  let originDir: string;
  let diskPath: string;
  let origin: CountingStore;
  let edge: RunningEdge;

  before(async () => {
    originDir = await mkdtemp(join(tmpdir(), 'kdn-edge-methods-origin-'));
    diskPath = await mkdtemp(join(tmpdir(), 'kdn-edge-methods-disk-'));
    origin = new CountingStore(openStore(`file:${originDir}`));
    await origin.inner.put(KEY, makeKVObject(7));
    edge = await startEdge({ port: 0, diskPath, memoryBytes: '1MiB', diskBytes: '4MiB', secret: TEST_EDGE_SECRET }, { origin });
  });

  after(async () => {
    await edge.close();
    await origin.close();
    await rm(originDir, { recursive: true, force: true });
    await rm(diskPath, { recursive: true, force: true });
  });

  for (const route of Object.keys(PATHS) as EdgeRoute[]) {
    const wrong = METHODS.filter((method) => !(ROUTE_METHODS[route] as readonly string[]).includes(method));

    it(`${PATHS[route]}: ${wrong.join(', ')} are 405 with Allow: ${ROUTE_METHODS[route].join(', ')}, and touch nothing`, async () => {
      const before = { gets: origin.gets, puts: origin.puts, deletes: origin.deletes };
      for (const method of wrong) {
        const body = method === 'PUT' || method === 'POST' || method === 'PATCH' ? makeKVObject(8) : undefined;
        expect405(await signedRequest(edge.url, method, PATHS[route], body ? { body } : {}), method, route);
      }
      expect({ gets: origin.gets, puts: origin.puts, deletes: origin.deletes }).to.deep.equal(before);
    });
  }

  it('answers 405 before checking the token: the methods of a path are no secret, and nothing runs', async () => {
    const res = await httpRequest(edge.url, 'PATCH', PATHS.kv, { body: 'x' });
    expect405(res, 'PATCH', 'kv');
    const unsignedWarm = await httpRequest(edge.url, 'GET', PATHS.warm);
    expect405(unsignedWarm, 'GET', 'warm');
  });

  it('still answers the allowed methods: unsigned ones are refused as before, /healthz GET and HEAD are open', async () => {
    expect((await httpRequest(edge.url, 'GET', PATHS.kv)).status).to.equal(401);
    expect((await httpRequest(edge.url, 'GET', PATHS.stats)).status).to.equal(401);
    expect((await httpRequest(edge.url, 'GET', PATHS.healthz)).status).to.equal(200);
    const head = await httpRequest(edge.url, 'HEAD', PATHS.healthz);
    expect(head.status).to.equal(200);
    expect(head.body.length).to.equal(0);
  });
});
