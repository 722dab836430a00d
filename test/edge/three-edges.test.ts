import { expect } from 'chai';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { EdgeClient } from '../../edge/client/client.ts';
import { startProcess, type Started } from '../../fixtures/processes.ts';
import { verifyKVObject } from '../../storage/kv-object/index.ts';
import { startS3rver, type RunningS3rver } from '../support/s3rver.ts';
import { TEST_EDGE_SECRET, makeKVObject, sha256 } from './helpers.ts';

/** `kdn edge --port 0 --json ...` as its own process. */
function startEdgeProcess(args: string[]): Promise<Started> {
  return startProcess(['bin/kdn.js', 'edge', '--port', '0', '--json', ...args], { env: { KDN_EDGE_SECRET: TEST_EDGE_SECRET } });
}

/** Runs `task` over `items` with at most `concurrency` at once. */
async function pool<T>(items: T[], concurrency: number, task: (item: T, index: number) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < items.length) {
        const index = next++;
        await task(items[index]!, index);
      }
    }),
  );
}

describe('three edge processes sharing one S3 origin', () => {
  const OBJECTS = 200;
  let s3: RunningS3rver;
  let root: string;
  let edges: Started[] = [];
  let client: EdgeClient;
  const expected = new Map<string, string>();

  before(async () => {
    s3 = await startS3rver();
    root = await mkdtemp(join(tmpdir(), 'kdn-three-edges-'));
    edges = await Promise.all(
      [0, 1, 2].map((i) =>
        startEdgeProcess([
          '--origin',
          s3.url,
          '--disk-path',
          join(root, `edge-${i}`),
          '--memory',
          '8MiB',
          '--disk',
          '64MiB',
          '--origin-timeout',
          '5000',
        ]),
      ),
    );
    client = new EdgeClient({ edges: edges.map((edge) => edge.ready.url), timeoutMs: 5_000, secret: TEST_EDGE_SECRET });
  });

  after(async () => {
    client?.close();
    await Promise.all(edges.map((edge) => edge.stop('SIGTERM')));
    await s3?.stop();
    if (root) await rm(root, { recursive: true, force: true });
  });

  it(`stores ${OBJECTS} objects through the client and reads them all back verified`, async () => {
    const owners = new Map<string, number>();
    await pool(
      Array.from({ length: OBJECTS }, (_, i) => i),
      8,
      async (i) => {
        const key = `kv/corpus/doc-${i % 17}/chunk-${i}.kv`;
        const object = makeKVObject(i, 16 + (i % 8) * 32);
        expected.set(key, sha256(object));
        const put = await client.put(key, object);
        owners.set(put.edge, (owners.get(put.edge) ?? 0) + 1);
      },
    );
    console.log(`      objects per owner edge: ${[...owners.values()].join(', ')}`);
    expect(owners.size).to.equal(3);

    await pool([...expected.keys()], 8, async (key) => {
      const got = await client.getBuffer(key);
      verifyKVObject(got.body);
      expect(sha256(got.body), key).to.equal(expected.get(key));
      expect(got.servedFrom, key).to.equal('memory');
    });
  });

  it('keeps every object readable and intact when one edge is SIGKILLed mid-run', async () => {
    const victim = edges[1]!;
    const keys = [...expected.keys()];
    const servedBy = new Map<string, number>();
    let completed = 0;
    let killedAt = -1;
    await pool(keys, 8, async (key) => {
      const got = await client.getBuffer(key);
      verifyKVObject(got.body);
      expect(sha256(got.body), key).to.equal(expected.get(key));
      servedBy.set(got.edge, (servedBy.get(got.edge) ?? 0) + 1);
      completed += 1;
      if (completed === 60) {
        killedAt = completed;
        victim.child.kill('SIGKILL');
      }
    });
    expect(killedAt).to.equal(60);
    expect(completed).to.equal(keys.length);
    console.log(
      `      read run with a kill after ${killedAt} reads: served per edge ${edges.map((edge) => servedBy.get(edge.ready.url) ?? 0).join(', ')}`,
    );

    // After the kill, a full pass must succeed from the two survivors alone.
    const after = new Map<string, number>();
    await pool(keys, 8, async (key) => {
      const got = await client.getBuffer(key);
      verifyKVObject(got.body);
      expect(sha256(got.body), key).to.equal(expected.get(key));
      expect(got.edge).to.not.equal(victim.ready.url);
      after.set(got.servedFrom, (after.get(got.servedFrom) ?? 0) + 1);
    });
    console.log(`      second pass without the killed edge, by tier: ${JSON.stringify(Object.fromEntries(after))}`);
    const stats = await client.stats();
    expect(stats.filter((entry) => entry.error !== undefined).map((entry) => entry.edge)).to.deep.equal([victim.ready.url]);
  });
});
