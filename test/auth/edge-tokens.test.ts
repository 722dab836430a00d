import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import { EDGE_TOKEN_SKEW_S, bodyDigest, newNonce, signEdgeToken, verifyEdgeToken } from '../../common/edge-token.ts';
import { EDGE_HEADERS } from '../../edge/protocol.ts';
import { EdgeClient } from '../../edge/client/client.ts';
import type { EdgeConfigInput } from '../../edge/server/config.ts';
import { startEdge, type RunningEdge } from '../../edge/server/main.ts';
import { openStore } from '../../storage/open-store.ts';
import type { ObjectStore } from '../../storage/object-store.ts';
import { CountingStore, TEST_EDGE_SECRET, errorCode, httpRequest, makeKVObject, tokenHeader, type RawResponse } from '../edge/helpers.ts';

const now = (): number => Math.floor(Date.now() / 1000);
const token = (method: string, target: string, expiry = now() + 10, secret = TEST_EDGE_SECRET): Record<string, string> => ({
  [EDGE_HEADERS.token]: signEdgeToken(secret, { method, target, expiry, nonce: newNonce() }),
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
    edge = await startEdge(
      { port: 0, diskPath: join(dir, 'disk'), memoryBytes: '4MiB', diskBytes: '8MiB', secret: TEST_EDGE_SECRET },
      { origin },
    );
    const client = new EdgeClient({ edges: [edge.url], secret: TEST_EDGE_SECRET });
    await client.put('kv/tok/stored.kv', stored);
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
      ['garbage', { [EDGE_HEADERS.token]: 'let-me-in' }, 401, 'UNAUTHENTICATED'],
      ['expired', token('GET', '/kv/kv/tok/stored.kv', expired), 401, 'UNAUTHENTICATED'],
      ['far future', token('GET', '/kv/kv/tok/stored.kv', now() + 10 * 3600), 401, 'UNAUTHENTICATED'],
      ['other key', token('GET', '/kv/kv/tok/other.kv'), 403, 'FORBIDDEN'],
      ['other method', token('HEAD', '/kv/kv/tok/stored.kv'), 403, 'FORBIDDEN'],
      ['other secret', token('GET', '/kv/kv/tok/stored.kv', now() + 60, 'another-secret-0123456789abcdef'), 403, 'FORBIDDEN'],
      [
        'tampered expiry',
        { [EDGE_HEADERS.token]: token('GET', '/kv/kv/tok/stored.kv')[EDGE_HEADERS.token]!.replace(/^\d+/, String(now() + 120)) },
        403,
        'FORBIDDEN',
      ],
    ];
    for (const [what, headers, status, code] of cases) {
      const got = await send('GET', '/kv/kv/tok/stored.kv', headers);
      try {
        refused(got, status, code);
      } catch (err) {
        throw new Error(`${what}: ${(err as Error).message}`);
      }
    }
    expect((await send('HEAD', '/kv/kv/tok/stored.kv', token('GET', '/kv/kv/tok/stored.kv'))).status).to.equal(403);
    expect((await send('GET', '/kv/kv/tok/stored.kv', token('GET', '/kv/kv/tok/stored.kv'))).body.equals(stored)).to.equal(true);
    // Within the skew allowance a just-expired token still works.
    expect((await send('GET', '/kv/kv/tok/stored.kv', token('GET', '/kv/kv/tok/stored.kv', now() - 2))).status).to.equal(200);
  });

  it('stores, purges and warms nothing without a token', async () => {
    const object = makeKVObject(8);
    const before = { puts: origin.puts, gets: origin.gets, deletes: origin.deletes, memory: edge.stats().memory.objects };
    refused(await send('PUT', '/kv/kv/tok/new.kv', {}, object), 401, 'UNAUTHENTICATED');
    const digest = { [EDGE_HEADERS.bodyDigest]: bodyDigest(object) };
    refused(await send('PUT', '/kv/kv/tok/new.kv', token('PUT', '/kv/kv/tok/new.kv'), object), 401, 'UNAUTHENTICATED');
    refused(await send('PUT', '/kv/kv/tok/new.kv', { ...token('GET', '/kv/kv/tok/new.kv'), ...digest }, object), 403, 'FORBIDDEN');
    refused(
      await send(
        'PUT',
        '/kv/kv/tok/new.kv',
        { ...tokenHeader('PUT', '/kv/kv/tok/elsewhere.kv', TEST_EDGE_SECRET, object), ...digest },
        object,
      ),
      403,
      'FORBIDDEN',
    );
    refused(await send('DELETE', '/kv/kv/tok/stored.kv?origin=true'), 401, 'UNAUTHENTICATED');
    refused(await send('DELETE', '/kv/kv/tok/stored.kv', token('GET', '/kv/kv/tok/stored.kv')), 403, 'FORBIDDEN');
    refused(
      await send('POST', '/warm', { 'content-type': 'application/json' }, Buffer.from(JSON.stringify({ keys: ['kv/tok/stored.kv'] }))),
      401,
      'UNAUTHENTICATED',
    );
    refused(
      await send('POST', '/warm', token('POST', '/kv/kv/tok/stored.kv'), Buffer.from(JSON.stringify({ keys: ['kv/tok/stored.kv'] }))),
      403,
      'FORBIDDEN',
    );
    expect({ puts: origin.puts, gets: origin.gets, deletes: origin.deletes, memory: edge.stats().memory.objects }).to.deep.equal(before);
    expect(await origin.head('kv/tok/new.kv')).to.equal(null);
    expect(await origin.head('kv/tok/stored.kv')).to.not.equal(null);
    expect(edge.stats().served.unauthorized).to.be.greaterThan(0);

    const put = await send('PUT', '/kv/kv/tok/new.kv', tokenHeader('PUT', '/kv/kv/tok/new.kv', TEST_EDGE_SECRET, object), object);
    expect(put.status).to.equal(201);
    const warm = await send(
      'POST',
      '/warm',
      token('POST', '/warm'),
      Buffer.from(JSON.stringify({ keys: ['kv/tok/stored.kv', 'kv/tok/new.kv'] })),
    );
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
    const open = await startEdge(
      { port: 0, diskPath: join(dir, 'disk-open'), memoryBytes: '1MiB', diskBytes: 0, secret: TEST_EDGE_SECRET, publicMetrics: true },
      { origin },
    );
    extra.push(open);
    expect((await httpRequest(open.url, 'GET', '/stats')).status).to.equal(200);
    expect((await httpRequest(open.url, 'GET', '/metrics')).body.toString()).to.contain('kdn_edge_unauthorized_total');
    expect((await httpRequest(open.url, 'GET', '/kv/kv/tok/stored.kv')).status).to.equal(401);
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
    expect((await httpRequest(insecure.url, 'GET', '/kv/kv/tok/stored.kv')).status).to.equal(200);
    await store.close();

    const env = { ...process.env };
    delete env['KDN_EDGE_SECRET'];
    const child = spawn(
      process.execPath,
      ['bin/kdn.js', 'edge', '--port', '0', '--origin', `file:${join(dir, 'origin')}`, '--disk-path', join(dir, 'disk-cli')],
      {
        stdio: ['ignore', 'ignore', 'pipe'],
        env,
      },
    );
    let stderr = '';
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    const [code] = (await once(child, 'exit')) as [number | null];
    expect(code).to.equal(1);
    expect(stderr).to.contain('--insecure-no-auth').and.contain('KDN_EDGE_SECRET');
  });

  it('verifies tokens in constant shape: only the exact method, target, body digest, expiry and scope pass', () => {
    const expiry = now() + 5;
    const nonce = newNonce();
    const digest = bodyDigest('body');
    const put = { method: 'PUT', target: '/kv/a/b.kv', bodyDigest: digest };
    const good = signEdgeToken(TEST_EDGE_SECRET, { ...put, expiry, nonce });
    expect(good).to.match(/^\d+\.[0-9a-f]{32}\.[0-9a-f]{64}$/);
    expect(verifyEdgeToken(TEST_EDGE_SECRET, good, put)).to.deep.equal({ expiry, nonce, scope: undefined });
    expect(() => verifyEdgeToken(TEST_EDGE_SECRET, good, { ...put, target: '/kv/a/b.kv?x=1' }))
      .to.throw()
      .with.property('code', 'FORBIDDEN');
    expect(() => verifyEdgeToken(TEST_EDGE_SECRET, good, { ...put, bodyDigest: bodyDigest('other') }))
      .to.throw()
      .with.property('code', 'FORBIDDEN');
    expect(() => verifyEdgeToken(TEST_EDGE_SECRET, good, put, expiry + EDGE_TOKEN_SKEW_S + 1))
      .to.throw()
      .with.property('code', 'UNAUTHENTICATED');
    expect(() => verifyEdgeToken(TEST_EDGE_SECRET, `${good}0`, put))
      .to.throw()
      .with.property('code', 'UNAUTHENTICATED');
    // Writes may not be signed for long; reads a little longer.
    const longWrite = signEdgeToken(TEST_EDGE_SECRET, { ...put, expiry: now() + 90, nonce });
    expect(() => verifyEdgeToken(TEST_EDGE_SECRET, longWrite, put))
      .to.throw()
      .with.property('code', 'UNAUTHENTICATED');
    const scoped = signEdgeToken(TEST_EDGE_SECRET, { method: 'POST', target: '/warm', expiry, nonce, scope: 'kv/s0123/' });
    expect(verifyEdgeToken(TEST_EDGE_SECRET, scoped, { method: 'POST', target: '/warm' }).scope).to.equal('kv/s0123/');
    const widened = scoped.replace(/\.[A-Za-z0-9_-]+$/, `.${Buffer.from('kv/').toString('base64url')}`);
    expect(() => verifyEdgeToken(TEST_EDGE_SECRET, widened, { method: 'POST', target: '/warm' }))
      .to.throw()
      .with.property('code', 'FORBIDDEN');
  });
});
