import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import { EDGE_TOKEN_HEADER, EDGE_TOKEN_SKEW_S, signEdgeToken, verifyEdgeToken } from '../../common/edge-token.ts';
import { EdgeClient } from '../../edge/client.ts';
import type { EdgeConfigInput } from '../../edge/config.ts';
import { startEdge, type RunningEdge } from '../../edge/main.ts';
import { openStore } from '../../storage/open-store.ts';
import type { ObjectStore } from '../../storage/object-store.ts';
import { CountingStore, TEST_EDGE_SECRET, errorCode, httpRequest, makeKVObject, type RawResponse } from '../edge/helpers.ts';

const now = (): number => Math.floor(Date.now() / 1000);
const token = (method: string, target: string, expiry = now() + 60, secret = TEST_EDGE_SECRET): Record<string, string> => ({
  [EDGE_TOKEN_HEADER]: signEdgeToken(secret, method, target, expiry),
});

describe('edge tokens', () => {
  let dir: string;
  let origin: CountingStore;
  let edge: RunningEdge;
  const extra: RunningEdge[] = [];
  const stored = makeKVObject(7);

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'kdn-edge-auth-'));
    origin = new CountingStore(openStore(`file:${join(dir, 'origin')}`));
    edge = await startEdge({ port: 0, diskPath: join(dir, 'disk'), memoryBytes: '4MiB', diskBytes: '8MiB', secret: TEST_EDGE_SECRET }, { origin });
    const client = new EdgeClient({ edges: [edge.url], secret: TEST_EDGE_SECRET });
    await client.put('tok/stored', stored);
    client.close();
  });

  after(async () => {
    for (const e of extra) await e.close();
    await edge?.close();
    await origin?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  const send = (method: string, path: string, headers: Record<string, string> = {}, body?: Uint8Array): Promise<RawResponse> =>
    httpRequest(edge.url, method, path, { headers, ...(body ? { body } : {}) });

  /** An error answer: JSON, the expected status, and none of the object's bytes. */
  function refused(got: RawResponse, status: number, code: string): void {
    expect(got.status).to.equal(status);
    expect(got.headers['content-type']).to.match(/^application\/json/);
    expect(errorCode(got)).to.equal(code);
    expect(got.body.includes(stored.subarray(0, 64))).to.equal(false);
  }

  it('serves nothing without a valid token for that method and key', async () => {
    const expired = now() - EDGE_TOKEN_SKEW_S - 5;
    const cases: [string, Record<string, string>, number, string][] = [
      ['no token', {}, 401, 'UNAUTHENTICATED'],
      ['garbage', { [EDGE_TOKEN_HEADER]: 'let-me-in' }, 401, 'UNAUTHENTICATED'],
      ['expired', token('GET', 'tok/stored', expired), 401, 'UNAUTHENTICATED'],
      ['far future', token('GET', 'tok/stored', now() + 10 * 3600), 401, 'UNAUTHENTICATED'],
      ['other key', token('GET', 'tok/other'), 403, 'FORBIDDEN'],
      ['other method', token('HEAD', 'tok/stored'), 403, 'FORBIDDEN'],
      ['other secret', token('GET', 'tok/stored', now() + 60, 'another-secret-0123456789abcdef'), 403, 'FORBIDDEN'],
      ['tampered expiry', { [EDGE_TOKEN_HEADER]: token('GET', 'tok/stored')[EDGE_TOKEN_HEADER]!.replace(/^\d+/, String(now() + 120)) }, 403, 'FORBIDDEN'],
    ];
    for (const [what, headers, status, code] of cases) {
      const got = await send('GET', '/kv/tok/stored', headers);
      try {
        refused(got, status, code);
      } catch (err) {
        throw new Error(`${what}: ${(err as Error).message}`);
      }
    }
    expect((await send('HEAD', '/kv/tok/stored', token('GET', 'tok/stored'))).status).to.equal(403);
    expect((await send('GET', '/kv/tok/stored', token('GET', 'tok/stored'))).body.equals(stored)).to.equal(true);
    // Within the skew allowance a just-expired token still works.
    expect((await send('GET', '/kv/tok/stored', token('GET', 'tok/stored', now() - 5))).status).to.equal(200);
  });

  it('stores, purges and warms nothing without a token', async () => {
    const object = makeKVObject(8);
    const before = { puts: origin.puts, gets: origin.gets, deletes: origin.deletes, memory: edge.stats().memory.objects };
    refused(await send('PUT', '/kv/tok/new', {}, object), 401, 'UNAUTHENTICATED');
    refused(await send('PUT', '/kv/tok/new', token('GET', 'tok/new'), object), 403, 'FORBIDDEN');
    refused(await send('PUT', '/kv/tok/new', token('PUT', 'tok/elsewhere'), object), 403, 'FORBIDDEN');
    refused(await send('DELETE', '/kv/tok/stored?origin=true'), 401, 'UNAUTHENTICATED');
    refused(await send('DELETE', '/kv/tok/stored', token('GET', 'tok/stored')), 403, 'FORBIDDEN');
    refused(await send('POST', '/warm', { 'content-type': 'application/json' }, Buffer.from(JSON.stringify({ keys: ['tok/stored'] }))), 401, 'UNAUTHENTICATED');
    refused(await send('POST', '/warm', token('POST', 'tok/stored'), Buffer.from(JSON.stringify({ keys: ['tok/stored'] }))), 403, 'FORBIDDEN');
    expect({ puts: origin.puts, gets: origin.gets, deletes: origin.deletes, memory: edge.stats().memory.objects }).to.deep.equal(before);
    expect(await origin.head('tok/new')).to.equal(null);
    expect(await origin.head('tok/stored')).to.not.equal(null);
    expect(edge.stats().served.unauthorized).to.be.greaterThan(0);

    const put = await send('PUT', '/kv/tok/new', token('PUT', 'tok/new'), object);
    expect(put.status).to.equal(201);
    const warm = await send('POST', '/warm', token('POST', '/warm'), Buffer.from(JSON.stringify({ keys: ['tok/stored', 'tok/new'] })));
    expect(warm.status).to.equal(200);
    expect(warm.body.toString()).to.contain('"done":true');
  });

  it('keeps /stats and /metrics behind a token unless --public-metrics; /healthz is always open', async () => {
    expect((await send('GET', '/healthz')).status).to.equal(200);
    for (const path of ['/stats', '/metrics']) {
      refused(await send('GET', path), 401, 'UNAUTHENTICATED');
      refused(await send('GET', path, token('GET', '/kv/x')), 403, 'FORBIDDEN');
      expect((await send('GET', path, token('GET', path))).status).to.equal(200);
    }
    const open = await startEdge({ port: 0, diskPath: join(dir, 'disk-open'), memoryBytes: '1MiB', diskBytes: 0, secret: TEST_EDGE_SECRET, publicMetrics: true }, { origin });
    extra.push(open);
    expect((await httpRequest(open.url, 'GET', '/stats')).status).to.equal(200);
    expect((await httpRequest(open.url, 'GET', '/metrics')).body.toString()).to.contain('kdn_edge_unauthorized_total');
    expect((await httpRequest(open.url, 'GET', '/kv/tok/stored')).status).to.equal(401);
  });

  it('refuses to start without a secret unless told --insecure-no-auth', async () => {
    const store: ObjectStore = openStore(`file:${join(dir, 'origin')}`);
    const attempt = (config: Partial<EdgeConfigInput>): Promise<unknown> =>
      startEdge({ port: 0, diskPath: join(dir, 'disk-nosecret'), memoryBytes: '1MiB', diskBytes: 0, ...config }, { origin: store }).then(
        (started) => {
          extra.push(started);
          return started;
        },
        (err: unknown) => err,
      );
    const err = await attempt({ secret: undefined });
    expect(err).to.have.property('code', 'INVALID_ARGUMENT');
    expect((err as { hint: string }).hint).to.contain('--insecure-no-auth');
    expect(await attempt({ secret: 'short' })).to.have.property('code', 'INVALID_ARGUMENT');
    const insecure = (await attempt({ insecureNoAuth: true })) as RunningEdge;
    expect((await httpRequest(insecure.url, 'GET', '/kv/tok/stored')).status).to.equal(200);
    await store.close();

    const env = { ...process.env };
    delete env['KDN_EDGE_SECRET'];
    const child = spawn(process.execPath, ['bin/kdn.js', 'edge', '--port', '0', '--origin', `file:${join(dir, 'origin')}`, '--disk-path', join(dir, 'disk-cli')], {
      stdio: ['ignore', 'ignore', 'pipe'], env,
    });
    let stderr = '';
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    const [code] = (await once(child, 'exit')) as [number | null];
    expect(code).to.equal(1);
    expect(stderr).to.contain('--insecure-no-auth').and.contain('KDN_EDGE_SECRET');
  });

  it('verifies tokens in constant shape: only the exact method, target and expiry pass', () => {
    const expiry = now() + 30;
    const good = signEdgeToken(TEST_EDGE_SECRET, 'PUT', 'a/b', expiry);
    expect(good).to.match(/^\d+\.[0-9a-f]{64}$/);
    expect(() => verifyEdgeToken(TEST_EDGE_SECRET, good, 'PUT', 'a/b')).to.not.throw();
    expect(() => verifyEdgeToken(TEST_EDGE_SECRET, good, 'PUT', 'a/b/c')).to.throw().with.property('code', 'FORBIDDEN');
    expect(() => verifyEdgeToken(TEST_EDGE_SECRET, good, 'PUT', 'a/b', expiry + EDGE_TOKEN_SKEW_S + 1)).to.throw().with.property('code', 'UNAUTHENTICATED');
    expect(() => verifyEdgeToken(TEST_EDGE_SECRET, `${good}0`, 'PUT', 'a/b')).to.throw().with.property('code', 'UNAUTHENTICATED');
  });
});
