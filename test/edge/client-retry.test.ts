import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import { EdgeClient } from '../../edge/client/client.ts';
import { startEdge, type RunningEdge } from '../../edge/server/main.ts';
import { openStore } from '../../storage/open-store.ts';
import type { ObjectStore } from '../../storage/object-store.ts';
import { startResettingProxy } from '../support/resetting-proxy.ts';
import { TEST_EDGE_SECRET, makeKVObject, sha256 } from './helpers.ts';

/** The edge client against one real edge behind a proxy that resets connections: nothing to fail over to. */
describe('edge client: reset connections are retried, not failures', function () {
  this.timeout(60_000);
  let root: string;
  let origin: ObjectStore;
  let edge: RunningEdge;

  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'kdn-edge-retry-'));
    origin = openStore(`file:${join(root, 'origin')}`);
    edge = await startEdge(
      { port: 0, diskPath: join(root, 'disk'), memoryBytes: '16MiB', diskBytes: '64MiB', secret: TEST_EDGE_SECRET },
      { origin },
    );
  });

  after(async () => {
    await edge?.close();
    await origin?.close();
    if (root) await rm(root, { recursive: true, force: true });
  });

  it('sends PUT and GET again on a new connection when a kept-alive one turns out reset', async () => {
    const proxy = await startResettingProxy(edge.url, { reused: true });
    const client = new EdgeClient({ edges: [proxy.url], secret: TEST_EDGE_SECRET });
    try {
      for (let i = 0; i < 6; i++) {
        const body = makeKVObject(100 + i);
        await client.put(`kv/retry/reused-${i}.kv`, body);
        const got = await client.getBuffer(`kv/retry/reused-${i}.kv`);
        expect(sha256(got.body)).to.equal(sha256(body));
      }
      expect(proxy.resets(), 'kept-alive connections the proxy reset').to.be.greaterThan(0);
    } finally {
      client.close();
      await proxy.close();
    }
  });

  it('retries with backoff when the only edge resets fresh connections, and reports EDGE_UNAVAILABLE once it always does', async () => {
    const body = makeKVObject(7);
    const flaky = await startResettingProxy(edge.url, { fresh: 2 });
    const client = new EdgeClient({ edges: [flaky.url], secret: TEST_EDGE_SECRET });
    try {
      await client.put('kv/retry/fresh.kv', body);
      expect(flaky.resets()).to.equal(2);
      expect(sha256((await client.getBuffer('kv/retry/fresh.kv')).body)).to.equal(sha256(body));
    } finally {
      client.close();
      await flaky.close();
    }
    const dead = await startResettingProxy(edge.url, { fresh: 1_000 });
    const hopeless = new EdgeClient({ edges: [dead.url], secret: TEST_EDGE_SECRET });
    try {
      const err = await hopeless.getBuffer('kv/retry/fresh.kv').then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).to.have.property('code', 'EDGE_UNAVAILABLE');
      expect(dead.resets(), 'one request per retry round').to.equal(3);
    } finally {
      hopeless.close();
      await dead.close();
    }
  });
});
