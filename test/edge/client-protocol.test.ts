import { expect } from 'chai';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { KdnError } from '../../common/errors.ts';
import { EdgeClient } from '../../edge/client/client.ts';
import { CONTENT_TYPES, EDGE_HEADERS, EDGE_PATHS } from '../../edge/protocol.ts';
import { makeKVObject } from './helpers.ts';

/**
 * A peer on a real socket that speaks HTTP but not the edge protocol's bodies (another version, a proxy, a bug):
 * the client must turn each answer into a typed KdnError, never crash or hand back an unchecked value.
 */
type Answers = Record<string, { status: number; body: string }>;

async function startMisbehavingPeer(answers: Answers): Promise<{ url: string; close(): Promise<void> }> {
  const server: Server = createServer((req, res) => {
    req.resume();
    req.once('end', () => {
      const route = req.url?.startsWith(EDGE_PATHS.kvPrefix) ? `${req.method} kv` : `${req.method} ${req.url}`;
      const answer = answers[route] ?? { status: 404, body: 'no such thing' };
      res.writeHead(answer.status, { [EDGE_HEADERS.contentType]: CONTENT_TYPES.json });
      res.end(answer.body);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return { url: `http://127.0.0.1:${port}`, close: () => new Promise((resolve) => server.close(() => resolve())) };
}

async function rejection(promise: Promise<unknown>): Promise<KdnError> {
  try {
    await promise;
  } catch (err) {
    expect(err).to.be.instanceOf(KdnError);
    return err as KdnError;
  }
  throw new Error('expected a rejection');
}

describe('edge client: bodies that break the edge protocol', () => {
  const KEY = 'kv/s00/doc/chunk-0001.kv';
  let peer: { url: string; close(): Promise<void> };
  let client: EdgeClient;

  before(async () => {
    peer = await startMisbehavingPeer({
      'PUT kv': { status: 201, body: JSON.stringify({ key: KEY, size: 'big' }) },
      'DELETE kv': { status: 200, body: 'not json at all' },
      [`GET ${EDGE_PATHS.stats}`]: { status: 200, body: JSON.stringify({ uptimeSeconds: 1 }) },
      [`POST ${EDGE_PATHS.warm}`]: { status: 200, body: `${JSON.stringify({ key: KEY, status: 'melted', bytes: 1 })}\n` },
      'GET kv': { status: 400, body: JSON.stringify({ error: { code: 'NOT_A_CODE', message: 'odd' } }) },
    });
    client = new EdgeClient({ edges: [peer.url], timeoutMs: 2_000, secret: 'client-protocol-secret-0123456789' });
  });

  after(async () => {
    client.close();
    await peer.close();
  });

  it('PUT: a 201 whose body is not a PutResponse is EDGE_UNAVAILABLE naming the bad field', async () => {
    const err = await rejection(client.put(KEY, makeKVObject(1)));
    expect(err.code).to.equal('EDGE_UNAVAILABLE');
    const attempts = err.details?.['attempts'] as { message: string }[];
    expect(attempts[0]!.message).to.contain('does not match the edge protocol').and.contain('size').and.contain('etag');
  });

  it('DELETE: a 200 that is not JSON counts as that edge failing', async () => {
    const err = await rejection(client.delete(KEY));
    expect(err.code).to.equal('EDGE_UNAVAILABLE');
    const edges = err.details?.['edges'] as { ok: boolean; error: string }[];
    expect(edges).to.have.length(1);
    expect(edges[0]!.ok).to.equal(false);
    expect(edges[0]!.error).to.contain('not JSON');
  });

  it("stats: an incomplete /stats body is reported as that edge's error, not returned", async () => {
    const [result] = await client.stats();
    expect(result!.stats).to.equal(undefined);
    expect(result!.error).to.contain('does not match the edge protocol').and.contain('memory');
  });

  it('warm: a progress line with an unknown status fails the key instead of counting it', async () => {
    const summary = await client.warm([KEY]);
    expect(summary).to.deep.equal({ keys: 1, warmed: 0, present: 0, failed: 1, bytes: 0 });
  });

  it('an error body with an unknown code falls back on the HTTP status', async () => {
    const err = await rejection(client.getBuffer(KEY));
    expect(err.code).to.equal('INVALID_ARGUMENT');
    expect(err.message).to.equal('HTTP 400');
  });
});
