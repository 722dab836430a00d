import { connect, type Socket } from 'node:net';
import { request } from 'node:http';
import { expect } from 'chai';
import { EDGE_HEADERS } from '../../edge/protocol.ts';
import { tokenHeader } from '../edge/helpers.ts';
import { TEST_EDGE_SECRET } from '../../fixtures/processes.ts';
import { KEYS, startSecurityStack, type SecurityStack } from './support/stack.ts';

/** A second loopback source address: the server sees it as another client host. */
const OTHER_HOST = '127.0.0.2';
const CAP = 6;

interface Trickler {
  socket: Socket;
  received: () => string;
  closed: Promise<void>;
  stop(): void;
}

/** Opens a request that declares a large body and then sends one byte every `everyMs`, as the red team did. */
function trickle(url: string, head: string, everyMs = 250): Trickler {
  return trickleRaw(url, `${head}Host: x\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{`, everyMs);
}

/** Sends `start`, then a space every `everyMs` (inside a body, or inside a header that never ends). */
function trickleRaw(url: string, start: string, everyMs: number): Trickler {
  const { hostname, port } = new URL(url);
  const socket = connect(Number(port), hostname);
  let received = '';
  socket.on('data', (chunk: Buffer) => (received += chunk.toString('latin1')));
  socket.on('error', () => undefined);
  socket.write(start);
  const timer = setInterval(() => {
    if (!socket.destroyed) socket.write(' ');
  }, everyMs);
  // Not events.once: a reset socket emits 'error' before 'close', which would reject it.
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve())).then(() => clearInterval(timer));
  return { socket, received: () => received, closed, stop: () => socket.destroy() };
}

/** One GET from another source address; resolves with the status, or 0 when the connection was refused or closed. */
function getFrom(localAddress: string, url: string, headers: Record<string, string> = {}): Promise<number> {
  return new Promise((resolve) => {
    const req = request(url, { localAddress, headers, agent: false }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
      res.on('error', () => resolve(0));
    });
    req.on('error', () => resolve(0));
    req.end();
  });
}

describe('security: slow clients', function () {
  this.timeout(60_000);
  let stack: SecurityStack;
  let kdnUrl: string;
  let edgeUrl: string;
  const open: Trickler[] = [];

  before(async () => {
    stack = await startSecurityStack({
      kdn: { KDN_MAX_CONNECTIONS_PER_ADDRESS: String(CAP), KDN_REQUEST_TIMEOUT_MS: '4000', KDN_HEADERS_TIMEOUT_MS: '2000' },
      edge: { KDN_EDGE_MAX_CONNECTIONS_PER_ADDRESS: String(CAP) },
    });
    kdnUrl = stack.kdn.ready.url;
    edgeUrl = stack.edge.ready.url;
  });

  afterEach(() => {
    for (const t of open.splice(0)) t.stop();
  });

  after(async () => {
    await stack?.close();
  });

  it('4: an unauthenticated slow body gets its 401 and loses its socket, at kdn and at the edge', async () => {
    for (const [url, head] of [
      [kdnUrl, 'POST /v1/documents HTTP/1.1\r\n'],
      [edgeUrl, 'PUT /kv/kv/a/b.kv HTTP/1.1\r\n'],
    ] as const) {
      const t = trickle(url, head);
      open.push(t);
      // 100,000 bytes at 4 a second would take hours: the close can only come from the server.
      await t.closed;
      expect(t.received()).to.match(/^HTTP\/1\.1 401 /);
      expect(t.received().toLowerCase()).to.contain('connection: close');
    }
  });

  it('4: an authenticated slow body is cut off at the request timeout', async () => {
    const t = trickle(kdnUrl, `POST /v1/documents HTTP/1.1\r\nAuthorization: Bearer ${KEYS.alice}\r\n`);
    open.push(t);
    await t.closed;
    expect(t.received()).to.match(/^HTTP\/1\.1 408 /);
  });

  it('4: slow bodies hold at most the per-address cap of sockets while other clients keep being served', async () => {
    for (const [url, head] of [
      [kdnUrl, `POST /v1/documents HTTP/1.1\r\nAuthorization: Bearer ${KEYS.mallory}\r\n`],
      // At the edge, whose refusals close at once, the slow part is a header that never ends.
      [edgeUrl, `GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: `],
    ] as const) {
      const attackers = Array.from({ length: CAP * 3 }, () => (url === kdnUrl ? trickle(url, head, 100) : trickleRaw(url, head, 100)));
      open.push(...attackers);
      // Past the cap, the attacker's sockets are closed at once without an answer.
      const refused = attackers.slice(CAP);
      await Promise.all(refused.map((t) => t.closed));
      expect(refused.every((t) => t.received() === '')).to.equal(true);
      expect(attackers.slice(0, CAP).filter((t) => !t.socket.destroyed)).to.have.length(CAP);
      // Another host is served meanwhile: health and an authenticated read.
      expect(await getFrom(OTHER_HOST, `${url}/healthz`)).to.equal(200);
      if (url === kdnUrl) expect(await getFrom(OTHER_HOST, `${url}/v1/documents`, { authorization: `Bearer ${KEYS.bob}` })).to.equal(200);
      for (const t of attackers) t.stop();
    }
  });

  it('5: failed logins are throttled per address with 429 and Retry-After; other addresses and good keys pass', async () => {
    const statuses: number[] = [];
    let retryAfter: string | null = null;
    for (let i = 0; i < 60; i++) {
      const res = await fetch(`${kdnUrl}/v1/documents`, { headers: { authorization: `Bearer guess-${i}` } });
      statuses.push(res.status);
      if (res.status === 429) retryAfter = res.headers.get('retry-after');
      await res.arrayBuffer();
    }
    expect(statuses.slice(0, 10).every((s) => s === 401)).to.equal(true);
    expect(statuses.slice(-10).every((s) => s === 429)).to.equal(true);
    expect(Number(retryAfter)).to.be.greaterThan(0);
    expect(await getFrom(OTHER_HOST, `${kdnUrl}/v1/documents`, { authorization: `Bearer ${KEYS.bob}` })).to.equal(200);

    const edgeStatuses: number[] = [];
    for (let i = 0; i < 60; i++) {
      const res = await fetch(`${edgeUrl}/kv/kv/a/b.kv`, { headers: { [EDGE_HEADERS.token]: `1.${'0'.repeat(32)}.${'0'.repeat(64)}` } });
      edgeStatuses.push(res.status);
      await res.arrayBuffer();
    }
    expect(edgeStatuses[0]).to.equal(401);
    expect(edgeStatuses.slice(-10).every((s) => s === 429)).to.equal(true);
    // A valid token from the same address still passes: tokens cannot be guessed, and kdn may share that address.
    const good = await fetch(`${edgeUrl}/stats`, { headers: tokenHeader('GET', '/stats', TEST_EDGE_SECRET) });
    expect(good.status).to.equal(200);
  });
});
