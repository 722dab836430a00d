import { expect } from 'chai';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer as createHttpServer } from 'node:http';
import { createServer, connect, type Server, type Socket } from 'node:net';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { EdgeClient, type WarmProgress } from '../../edge/client/client.ts';
import { startEdge, type RunningEdge } from '../../edge/server/main.ts';
import { rendezvousOwner } from '../../edge/client/rendezvous.ts';
import { openStore } from '../../storage/open-store.ts';
import type { ObjectStore } from '../../storage/object-store.ts';
import { TEST_EDGE_SECRET, makeKVObject } from './helpers.ts';

interface Cluster {
  origin: ObjectStore;
  edges: RunningEdge[];
  client: EdgeClient;
}

const cleanups: (() => Promise<void>)[] = [];

/** `count` in-process edges sharing one filesystem origin, and a client over them. */
async function startCluster(count: number, extraEdgeUrls: string[] = []): Promise<Cluster> {
  const root = await mkdtemp(join(tmpdir(), 'kdn-edge-client-'));
  const origin = openStore(`file:${join(root, 'origin')}`);
  const edges: RunningEdge[] = [];
  for (let i = 0; i < count; i += 1) {
    edges.push(
      await startEdge(
        { port: 0, diskPath: join(root, `disk-${i}`), memoryBytes: '16MiB', diskBytes: '64MiB', secret: TEST_EDGE_SECRET },
        { origin },
      ),
    );
  }
  const client = new EdgeClient({
    edges: [...edges.map((edge) => edge.url), ...extraEdgeUrls],
    timeoutMs: 5_000,
    secret: TEST_EDGE_SECRET,
  });
  cleanups.push(async () => {
    client.close();
    for (const edge of edges) await edge.close();
    await origin.close();
    await rm(root, { recursive: true, force: true });
  });
  return { origin, edges, client };
}

/** A key whose rendezvous owner among `edges` is `owner`. */
function keyOwnedBy(owner: string, edges: readonly string[], prefix = 'owned'): string {
  for (let i = 0; ; i += 1) {
    const key = `kv/${prefix}/${i}.kv`;
    if (rendezvousOwner(key, edges) === owner) return key;
  }
}

/** A TCP proxy that forwards to `target` but cuts every connection after `cutAfter` bytes of response. */
async function startCuttingProxy(target: string, cutAfter: number): Promise<{ url: string; cuts: () => number; close(): Promise<void> }> {
  const { hostname, port } = new URL(target);
  let cuts = 0;
  const sockets = new Set<Socket>();
  const server: Server = createServer((downstream) => {
    const upstream = connect(Number(port), hostname);
    sockets.add(downstream).add(upstream);
    let forwarded = 0;
    downstream.on('data', (chunk: Buffer) => upstream.write(chunk));
    upstream.on('data', (chunk: Buffer) => {
      const room = cutAfter - forwarded;
      forwarded += chunk.length;
      if (room > chunk.length) {
        downstream.write(chunk);
        return;
      }
      downstream.write(chunk.subarray(0, room));
      cuts += 1;
      downstream.destroy();
      upstream.destroy();
    });
    const end = (): void => {
      downstream.destroy();
      upstream.destroy();
    };
    downstream.on('error', end).on('close', end);
    upstream.on('error', end).on('close', end);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    cuts: () => cuts,
    close: () =>
      new Promise((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  };
}

afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!();
});

describe('edge client', () => {
  it("puts to and gets from the key's owner edge", async () => {
    const { client, edges } = await startCluster(3);
    const objects = Array.from({ length: 12 }, (_, i) => makeKVObject(i));
    for (const [i, object] of objects.entries()) {
      const key = `kv/doc/${i}.kv`;
      const put = await client.put(key, object);
      expect(put.edge).to.equal(client.order(key)[0]);
      expect(put.size).to.equal(object.length);
      const got = await client.getBuffer(key);
      expect(got.edge).to.equal(put.edge);
      expect(got.servedFrom).to.equal('memory');
      expect(got.etag).to.equal(put.etag);
      expect(got.body.equals(object)).to.equal(true);
    }
    const held = edges.map((edge) => edge.stats().memory.objects);
    expect(held.reduce((a, b) => a + b, 0)).to.equal(12);
    expect(held.every((count) => count < 12)).to.equal(true);
  });

  it('tells which tier of the owner edge holds a key without filling it', async () => {
    const { client, edges } = await startCluster(2);
    const object = makeKVObject(21);
    expect(await client.cachedAt('kv/doc/probe.kv')).to.equal(null);
    await client.put('kv/doc/probe.kv', object);
    expect(await client.cachedAt('kv/doc/probe.kv')).to.deep.equal({ edge: client.order('kv/doc/probe.kv')[0], tier: 'memory' });
    expect(await client.cachedAt('kv/doc/absent.kv')).to.equal(null);
    expect(edges.map((edge) => edge.stats().memory.objects).reduce((a, b) => a + b, 0)).to.equal(1);
  });

  it('fails over to the next edge when the owner is down, which fills from the origin', async () => {
    const { client, edges } = await startCluster(3);
    const urls = edges.map((edge) => edge.url);
    const key = keyOwnedBy(urls[0]!, urls);
    const object = makeKVObject(40, 128);
    await client.put(key, object);
    await edges[0]!.close();

    const got = await client.getBuffer(key);
    expect(got.edge).to.equal(client.order(key)[0]);
    expect(got.edge).to.not.equal(urls[0]);
    expect(got.servedFrom).to.equal('origin');
    expect(got.body.equals(object)).to.equal(true);
    // The failed edge now goes last for every key.
    expect(client.order(key).at(-1)).to.equal(urls[0]);
    expect((await client.head(key))?.servedFrom).to.equal('memory');
  });

  it('fails over when an edge accepts connections but never answers, or answers 5xx', async () => {
    const { edges, origin } = await startCluster(1);
    const held = new Set<Socket>();
    const silent = createServer((socket) => held.add(socket));
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    const failing = createHttpServer((_req, res) => {
      res.writeHead(503, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ error: { code: 'ENGINE_UNAVAILABLE', message: 'overloaded' } }));
    });
    await new Promise<void>((resolve) => failing.listen(0, '127.0.0.1', resolve));
    cleanups.push(
      () =>
        new Promise((resolve) => {
          for (const socket of held) socket.destroy();
          silent.close(() => resolve());
        }),
      () =>
        new Promise((resolve) => {
          failing.closeAllConnections();
          failing.close(() => resolve());
        }),
    );
    const silentUrl = `http://127.0.0.1:${(silent.address() as AddressInfo).port}`;
    const failingUrl = `http://127.0.0.1:${(failing.address() as AddressInfo).port}`;
    const client = new EdgeClient({ edges: [silentUrl, failingUrl, edges[0]!.url], timeoutMs: 300, secret: TEST_EDGE_SECRET });
    cleanups.push(async () => client.close());

    const key = keyOwnedBy(silentUrl, client.edges, 'stuck');
    const object = makeKVObject(44);
    await origin.put(key, object);
    const got = await client.getBuffer(key);
    expect(got.edge).to.equal(edges[0]!.url);
    expect(got.body.equals(object)).to.equal(true);

    const broken = new EdgeClient({ edges: [silentUrl, failingUrl], timeoutMs: 300, secret: TEST_EDGE_SECRET });
    cleanups.push(async () => broken.close());
    const err = (await broken.getBuffer(key).then(
      () => null,
      (e: unknown) => e,
    )) as { code: string; details: { attempts: { edge: string; code: string }[] } } | null;
    expect(err).to.have.property('code', 'EDGE_UNAVAILABLE');
    expect(err!.details.attempts.map((attempt) => attempt.code).sort()).to.deep.equal(['ENGINE_UNAVAILABLE', 'TIMEOUT']);
  });

  it('resumes a body cut mid-transfer from the next edge with a Range request', async () => {
    const { edges, origin } = await startCluster(2);
    const proxy = await startCuttingProxy(edges[0]!.url, 300_000);
    cleanups.push(() => proxy.close());
    const client = new EdgeClient({ edges: [proxy.url, edges[1]!.url], secret: TEST_EDGE_SECRET });
    cleanups.push(async () => client.close());
    const key = keyOwnedBy(proxy.url, client.edges, 'resume');
    const object = makeKVObject(41, 8_192);
    await origin.put(key, object);

    const got = await client.getBuffer(key);
    expect(proxy.cuts()).to.equal(1);
    expect(got.edge).to.equal(proxy.url);
    expect(got.body.equals(object)).to.equal(true);
    expect(edges[1]!.stats().served.partial).to.equal(1);
  });

  it('passes NOT_FOUND and KV_CORRUPT through without failing over', async () => {
    const { client, origin, edges } = await startCluster(2);
    const missing = await client.getBuffer('kv/no/such/key.kv').then(
      () => null,
      (err: unknown) => err,
    );
    expect(missing).to.have.property('code', 'NOT_FOUND');
    expect(await client.head('kv/no/such/key.kv')).to.equal(null);

    const corrupt = makeKVObject(42);
    corrupt[corrupt.length - 3]! ^= 0x10;
    await origin.put('kv/bad/one.kv', corrupt);
    const err = await client.getBuffer('kv/bad/one.kv').then(
      () => null,
      (e: unknown) => e,
    );
    expect(err).to.have.property('code', 'KV_CORRUPT');
    expect(edges.map((edge) => edge.stats().origin.corrupt).reduce((a, b) => a + b, 0)).to.equal(1);

    const bad = await client.put('kv/bad/one.kv', corrupt).then(
      () => null,
      (e: unknown) => e,
    );
    expect(bad).to.have.property('code', 'KV_CORRUPT');
    const badKey = await client.get('../etc/passwd').then(
      () => null,
      (e: unknown) => e,
    );
    expect(badKey).to.have.property('code', 'INVALID_KEY');
  });

  it('raises EDGE_UNAVAILABLE with every attempt when no edge answers', async () => {
    const dead = await startCluster(2);
    const urls = dead.edges.map((edge) => edge.url);
    for (const edge of dead.edges) await edge.close();
    const client = new EdgeClient({ edges: urls, timeoutMs: 1_000, secret: TEST_EDGE_SECRET });
    cleanups.push(async () => client.close());
    const err = (await client.getBuffer('kv/any/key.kv').then(
      () => null,
      (e: unknown) => e,
    )) as { code: string; details: { attempts: unknown[] } } | null;
    expect(err).to.have.property('code', 'EDGE_UNAVAILABLE');
    expect(err!.details.attempts).to.have.length(2);
    const put = await client.put('kv/any/key.kv', makeKVObject(1)).then(
      () => null,
      (e: unknown) => e,
    );
    expect(put).to.have.property('code', 'EDGE_UNAVAILABLE');
    const stats = await client.stats();
    expect(stats.every((entry) => entry.error !== undefined)).to.equal(true);
  });

  it('deletes from every edge and, when asked, from the origin', async () => {
    const { client, edges, origin } = await startCluster(3);
    const object = makeKVObject(43);
    await client.put('kv/del/me.kv', object);
    // Spread copies: every edge fetches it once.
    for (const edge of edges) await new EdgeClient({ edges: [edge.url], secret: TEST_EDGE_SECRET }).getBuffer('kv/del/me.kv');
    expect(edges.every((edge) => edge.stats().memory.objects === 1)).to.equal(true);

    const result = await client.delete('kv/del/me.kv', { origin: true });
    expect(result.origin).to.equal(true);
    expect(result.edges.every((entry) => entry.ok && entry.deleted?.memory)).to.equal(true);
    expect(edges.every((edge) => edge.stats().memory.objects === 0 && edge.stats().disk.objects === 0)).to.equal(true);
    expect(await origin.head('kv/del/me.kv')).to.equal(null);
  });

  it("warms keys on their owner edges, moving a failed edge's keys to their next edge", async () => {
    const { client, edges, origin } = await startCluster(3);
    const keys = Array.from({ length: 30 }, (_, i) => `kv/warm/${i}.kv`);
    for (const [i, key] of keys.entries()) await origin.put(key, makeKVObject(100 + i));
    await edges[2]!.close();

    const progress: WarmProgress[] = [];
    const summary = await client.warm([...keys, 'kv/warm/missing.kv'], (line) => progress.push(line));
    expect(summary).to.include({ keys: 31, warmed: 30, present: 0, failed: 1 });
    expect(progress).to.have.length(31);
    expect(progress.find((line) => line.key === 'kv/warm/missing.kv')?.error?.code).to.equal('NOT_FOUND');
    for (const line of progress) {
      expect(line.edge).to.equal(client.order(line.key).find((edge) => edge !== edges[2]!.url));
    }
    expect(edges[0]!.stats().memory.objects + edges[1]!.stats().memory.objects).to.equal(30);
    const again = await client.warm(keys);
    expect(again).to.include({ present: 30, warmed: 0 });
  });
});
