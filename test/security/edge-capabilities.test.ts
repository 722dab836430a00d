import { readFile } from 'node:fs/promises';
import { createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { expect } from 'chai';
import { EDGE_TOKEN_TTL_S } from '../../common/edge-token.ts';
import { EDGE_HEADERS } from '../../edge/protocol.ts';
import { EdgeClient } from '../../edge/client/client.ts';
import type { EdgeStats } from '../../edge/protocol.ts';
import type { WarmPlan } from '../../kdn/client/api-client.ts';
import { documentId, manifestKey } from '../../kdn/keys.ts';
import { errorCode, httpRequest, makeKVObject, tokenHeader as tokenHeaderFor, type RawResponse } from '../edge/helpers.ts';
import { TEST_EDGE_SECRET } from '../../fixtures/processes.ts';
import { KEYS, startSecurityStack, type SecurityStack } from './support/stack.ts';

const SECRET_CODE = '4721';

/** Headers signed with the secret the stack's edge and kdn share, as kdn would send them. */
const tokenHeader = (method: string, path: string, body?: Uint8Array): Record<string, string> =>
  tokenHeaderFor(method, path, TEST_EDGE_SECRET, body);
const privateText = (code: string): string =>
  `Quarterly vault procedure. The door code for the north archive is ${code}. Change it after every audit and tell nobody. `.repeat(2);

interface WarmLine {
  key: string;
  status: string;
  bytes: number;
  error?: { code: string; message: string };
}

/** POST /warm on the edge with `token`, returning the per-key lines (the summary line dropped). */
async function warmWith(edgeUrl: string, token: string, keys: string[]): Promise<{ status: number; lines: WarmLine[]; raw: RawResponse }> {
  const raw = await httpRequest(edgeUrl, 'POST', '/warm', {
    headers: { [EDGE_HEADERS.token]: token, 'content-type': 'application/json' },
    body: JSON.stringify({ keys }),
  });
  const lines = raw.body
    .toString('utf8')
    .split('\n')
    .filter(Boolean)
    .map((line) => JSON.parse(line) as WarmLine & { done?: boolean })
    .filter((line) => !line.done);
  return { status: raw.status, lines, raw };
}

/** What a line says once its own key is blanked out: equal for every key means the answers tell keys apart by nothing. */
const shape = (line: WarmLine): string => JSON.stringify(line).split(line.key).join('<key>');

/**
 * A TCP man-in-the-middle between an edge client and an edge: it records each request it receives and, unless
 * told to forward, answers 502 without passing it on, so the token it captured is still unspent.
 */
class CapturingProxy {
  readonly captured: Buffer[] = [];
  private server: Server | undefined;

  async start(): Promise<string> {
    this.server = createServer((socket: Socket) => {
      let data = Buffer.alloc(0);
      socket.on('data', (chunk: Buffer) => {
        data = Buffer.concat([data, chunk]);
        const end = data.indexOf('\r\n\r\n');
        if (end < 0) return;
        const length = Number(/content-length: (\d+)/i.exec(data.subarray(0, end).toString('latin1'))?.[1] ?? 0);
        if (data.length < end + 4 + length) return;
        this.captured.push(data.subarray(0, end + 4 + length));
        data = Buffer.alloc(0);
        socket.end('HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\nconnection: close\r\n\r\n');
      });
      socket.on('error', () => undefined);
    });
    await new Promise<void>((resolve) => this.server!.listen(0, '127.0.0.1', resolve));
    const address = this.server.address() as { port: number };
    return `http://127.0.0.1:${address.port}`;
  }

  close(): Promise<void> {
    return new Promise((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
  }
}

/** A captured request taken apart: its head lines and body. */
function parseCaptured(raw: Buffer): { method: string; target: string; headers: Record<string, string>; body: Buffer } {
  const end = raw.indexOf('\r\n\r\n');
  const [requestLine, ...headerLines] = raw.subarray(0, end).toString('latin1').split('\r\n');
  const [method, target] = requestLine!.split(' ');
  const headers: Record<string, string> = {};
  for (const line of headerLines) {
    const colon = line.indexOf(':');
    headers[line.slice(0, colon).toLowerCase()] = line.slice(colon + 1).trim();
  }
  return { method: method!, target: target!, headers, body: raw.subarray(end + 4) };
}

/** Sends a captured request again to the edge, with some parts changed. */
function replay(
  edgeUrl: string,
  captured: ReturnType<typeof parseCaptured>,
  change: { target?: string; body?: Buffer } = {},
): Promise<RawResponse> {
  const headers = { ...captured.headers };
  delete headers['host'];
  delete headers['content-length'];
  delete headers['connection'];
  const body = change.body ?? captured.body;
  return httpRequest(edgeUrl, captured.method, change.target ?? captured.target, {
    headers,
    ...(body.length > 0 || captured.method === 'PUT' ? { body } : {}),
  });
}

describe('security: edge capabilities (existence oracle, control objects, token replay)', function () {
  this.timeout(120_000);
  let stack: SecurityStack;
  let edgeUrl: string;
  let aliceDoc: string;
  let aliceChunks: string[];

  const edgeStats = async (): Promise<EdgeStats> =>
    JSON.parse((await httpRequest(edgeUrl, 'GET', '/stats', { headers: tokenHeader('GET', '/stats') })).body.toString('utf8')) as EdgeStats;

  before(async () => {
    stack = await startSecurityStack();
    edgeUrl = stack.edge.ready.url;
    const { id } = await stack.upload(KEYS.alice, { namespace: 'private', title: 'vault.txt', text: privateText(SECRET_CODE) });
    aliceDoc = id;
    const detail = (await stack.call(KEYS.alice, 'GET', `/v1/documents/${id}?namespace=private`)).body as unknown as {
      chunks: { independent: { key: string } }[];
    };
    aliceChunks = detail.chunks.map((chunk) => chunk.independent.key);
    expect(aliceChunks.length).to.be.greaterThan(0);
  });

  after(async () => {
    await stack?.close();
  });

  it("1: a tenant's warm token cannot tell another tenant's documents, chunks or secrets from absent keys", async () => {
    const plan = (await stack.call(KEYS.mallory, 'POST', '/v1/warm/plan', { namespace: 'empty' })).body as unknown as WarmPlan;
    expect(plan.objects).to.deep.equal([]);
    const token = plan.edgeToken!.token;
    expect(plan.edgeToken!.expiresAt - Date.now() / 1000).to.be.at.most(60);

    // The red-team attack: guess the 4-digit code by asking the edge about the manifest each guess would have.
    const guesses = Array.from({ length: 1000 }, (_, i) => String(4000 + i));
    const manifestKeys = guesses.map((code) => manifestKey('alice/private', documentId('alice/private', 'vault.txt', privateText(code))));
    expect(manifestKeys).to.include(manifestKey('alice/private', aliceDoc));
    const probes = [...new Set([...manifestKeys, 'secrets/chunk-salt.key', ...aliceChunks, 'kv/s0000000000000000/no/such/chunk.kv'])];
    const fetchesBefore = (await edgeStats()).origin.fetches;
    const { status, lines } = await warmWith(edgeUrl, token, probes);
    expect(status).to.equal(200);
    expect(lines).to.have.length(probes.length);
    const shapes = new Set(lines.map(shape));
    expect([...shapes]).to.deep.equal([
      JSON.stringify({ key: '<key>', status: 'failed', bytes: 0, error: { code: 'NOT_FOUND', message: 'no object <key> at the origin' } }),
    ]);
    // Nothing outside the token's scope was even looked up at the origin.
    expect((await edgeStats()).origin.fetches).to.equal(fetchesBefore);

    // Warm plans are rate-limited per tenant.
    const answers = [];
    for (let i = 0; i < 8; i++) answers.push(await stack.call(KEYS.mallory, 'POST', '/v1/warm/plan', { namespace: 'empty' }));
    const limited = answers.find((answer) => answer.status === 429);
    expect(limited, 'an 8th plan in a row is refused').to.not.equal(undefined);
    expect(Number(limited!.headers.get('retry-after'))).to.be.greaterThan(0);
    // ... while another tenant's plans are not held up by mallory's.
    expect((await stack.call(KEYS.alice, 'POST', '/v1/warm/plan', { namespace: 'private' })).status).to.equal(200);
  });

  it("1: alice's own warm token warms her chunks, and only hers", async () => {
    const plan = (await stack.call(KEYS.alice, 'POST', '/v1/warm/plan', { namespace: 'private' })).body as unknown as WarmPlan;
    const { lines } = await warmWith(
      edgeUrl,
      plan.edgeToken!.token,
      plan.objects.map((o) => o.key),
    );
    expect(lines.map((line) => line.status)).to.not.include('failed');
    const bobs = (await stack.call(KEYS.bob, 'POST', '/v1/warm/plan', { namespace: 'private' })).body as unknown as WarmPlan;
    const { lines: crossed } = await warmWith(
      edgeUrl,
      bobs.edgeToken!.token,
      plan.objects.map((o) => o.key),
    );
    expect(new Set(crossed.map(shape)).size).to.equal(1);
    expect(crossed[0]!.error!.code).to.equal('NOT_FOUND');
  });

  it('2: no token, however signed, reads, overwrites or deletes manifests and secrets through an edge', async () => {
    const saltPath = join(stack.originDir, 'objects', 'secrets', 'chunk-salt.key');
    const manifestPath = join(stack.originDir, 'objects', ...manifestKey('alice/private', aliceDoc).split('/'));
    const before = { salt: await readFile(saltPath), manifest: await readFile(manifestPath) };
    const forged = makeKVObject(3);
    for (const key of ['secrets/chunk-salt.key', manifestKey('alice/private', aliceDoc)]) {
      // Tokens signed with the edge secret itself: the worst case, a signer that was tricked into signing.
      const put = await httpRequest(edgeUrl, 'PUT', `/kv/${key}`, { headers: tokenHeader('PUT', `/kv/${key}`, forged), body: forged });
      expect(put.status, `PUT ${key}`).to.equal(403);
      const get = await httpRequest(edgeUrl, 'GET', `/kv/${key}`, { headers: tokenHeader('GET', `/kv/${key}`) });
      expect(get.status, `GET ${key}`).to.equal(403);
      expect(get.body.toString()).to.not.contain(before.salt.toString());
      const del = await httpRequest(edgeUrl, 'DELETE', `/kv/${key}?origin=true`, {
        headers: tokenHeader('DELETE', `/kv/${key}?origin=true`),
      });
      expect(del.status, `DELETE ${key}`).to.equal(403);
    }
    expect(await readFile(saltPath)).to.deep.equal(before.salt);
    expect(await readFile(manifestPath)).to.deep.equal(before.manifest);
    const listed = (await stack.call(KEYS.alice, 'GET', '/v1/documents?namespace=private')).body as unknown as {
      documents: { id: string }[];
    };
    expect(listed.documents.map((d) => d.id)).to.include(aliceDoc);
  });

  it('3: a captured PUT token stores nothing else, and is spent once used', async () => {
    const proxy = new CapturingProxy();
    const client = new EdgeClient({ edges: [await proxy.start()], secret: TEST_EDGE_SECRET, timeoutMs: 2_000 });
    try {
      const good = makeKVObject(21);
      await client.put('kv/replay/target.kv', good).catch(() => undefined);
      await client.put('kv/replay/target.kv', good).catch(() => undefined);
      const [put, second] = [parseCaptured(proxy.captured[0]!), parseCaptured(proxy.captured[1]!)];
      const expiry = Number(put.headers[EDGE_HEADERS.token]!.split('.')[0]);
      expect(expiry - Date.now() / 1000).to.be.at.most(EDGE_TOKEN_TTL_S);

      const evil = makeKVObject(22);
      const swapped = await replay(edgeUrl, second, { body: evil });
      expect(swapped.status).to.equal(403);
      expect(errorCode(swapped)).to.equal('FORBIDDEN');
      const moved = await replay(edgeUrl, put, { target: '/kv/kv/replay/elsewhere.kv' });
      expect(moved.status).to.equal(403);
      // The genuine request goes through once; the same bytes again are refused.
      expect((await replay(edgeUrl, put)).status).to.equal(201);
      const again = await replay(edgeUrl, put);
      expect(again.status).to.equal(403);
      expect(JSON.parse(again.body.toString()).error.message).to.contain('already used');
      const stored = await httpRequest(edgeUrl, 'GET', '/kv/kv/replay/target.kv', {
        headers: tokenHeader('GET', '/kv/kv/replay/target.kv'),
      });
      expect(stored.body.equals(good)).to.equal(true);
    } finally {
      client.close();
      await proxy.close();
    }
  });

  it("3: a captured DELETE token does not reach the origin's copy with ?origin=true, and is spent once used", async () => {
    const proxy = new CapturingProxy();
    const client = new EdgeClient({ edges: [await proxy.start()], secret: TEST_EDGE_SECRET, timeoutMs: 2_000 });
    try {
      await client.delete('kv/replay/target.kv').catch(() => undefined);
      const del = parseCaptured(proxy.captured[0]!);
      expect(del.target).to.equal('/kv/kv/replay/target.kv');
      const widened = await replay(edgeUrl, del, { target: '/kv/kv/replay/target.kv?origin=true' });
      expect(widened.status).to.equal(403);
      const originCopy = join(stack.originDir, 'objects', 'kv', 'replay', 'target.kv');
      expect((await readFile(originCopy)).length).to.be.greaterThan(0);
      expect((await replay(edgeUrl, del)).status).to.equal(200);
      expect((await replay(edgeUrl, del)).status).to.equal(403);
      expect((await readFile(originCopy)).length).to.be.greaterThan(0);
    } finally {
      client.close();
      await proxy.close();
    }
  });
});
