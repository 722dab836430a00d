import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import { KdnApiClient, type QueryResponse } from '../../kdn/client/api-client.ts';
import { TEST_API_KEY, startKdnProcess, startKdnServe, startProcess, type Started } from '../../fixtures/processes.ts';
import { testModel, type TestModel } from './support/tiny-model.ts';

const PARAGRAPH = 'The river carries water from the hills to the sea. Mills stand along its banks and grind the grain. ';

/** kdn, three `kdn edge` processes and an s3rver origin, each its own process on loopback. */
describe('kdn with three edge processes and an S3 origin', function () {
  this.timeout(120_000);
  let model: TestModel;
  let dir: string;
  let s3: Started;
  const edges: Started[] = [];
  let kdn: Started;
  let api: KdnApiClient;

  before(async () => {
    model = await testModel({ preferShipped: false });
    dir = await mkdtemp(join(tmpdir(), 'kdn-multi-'));
    s3 = await startProcess(['test/support/s3rver-process.ts', '--port', '0', '--dir', join(dir, 's3'), '--bucket', 'kdn-multi'], {
      node: ['--import', 'tsx'],
    });
    const origin = s3.ready.url as string;
    expect(origin).to.match(/^s3:\/\//);
    // Started together: each start is mostly Node loading the CLI.
    const started = await Promise.allSettled(
      [0, 1, 2].map((i) =>
        startKdnProcess([
          'edge',
          '--port',
          '0',
          '--origin',
          origin,
          '--disk-path',
          join(dir, `edge-${i}`),
          '--memory',
          '64MiB',
          '--disk',
          '256MiB',
        ]),
      ),
    );
    for (const edge of started) if (edge.status === 'fulfilled') edges.push(edge.value);
    for (const edge of started) if (edge.status === 'rejected') throw edge.reason;
    kdn = await startKdnServe({
      model: model.dir,
      dataDir: join(dir, 'kdn'),
      chunkTokens: 24,
      codec: 'int8',
      args: ['--origin', origin, '--edges', edges.map((e) => e.ready.url).join(',')],
    });
    api = new KdnApiClient(kdn.ready.url, TEST_API_KEY);
  });

  after(async () => {
    await kdn?.stop();
    for (const edge of edges) await edge.stop();
    await s3?.stop('SIGTERM');
    await model?.cleanup();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('spreads chunk objects over the edges and answers when an edge is SIGKILLed mid-query', async () => {
    const { job } = await api.upload({ title: 'river', text: PARAGRAPH.repeat(8) });
    const done = await api.waitForJob(job.id);
    expect(done.status).to.equal('done');

    const ask = (): Promise<QueryResponse> => api.query({ question: 'What do the mills do?', documents: ['river'], maxTokens: 8 });
    const baseline = await ask();
    const owners = new Map<string, number>();
    for (const chunk of baseline.chunks) owners.set(chunk.edge!, (owners.get(chunk.edge!) ?? 0) + 1);
    console.log(`      ${baseline.chunks.length} chunks over ${owners.size} edges: ${[...owners.values()].join(', ')}`);
    expect(owners.size).to.be.at.least(2);
    expect(baseline.chunks.every((c) => c.tier !== 'computed')).to.equal(true);

    // Three clients query back to back; the busiest edge is SIGKILLed while they run, so queries are in flight.
    const victim = edges.find((e) => e.ready.url === [...owners].sort((a, b) => b[1] - a[1])[0]![0])!;
    const answers: QueryResponse[] = [];
    let running = true;
    const client = async (): Promise<void> => {
      while (running) answers.push(await ask());
    };
    const clients = [client(), client(), client()];
    await new Promise((resolve) => setTimeout(resolve, 300));
    await victim.stop('SIGKILL');
    const atKill = answers.length;
    await new Promise((resolve) => setTimeout(resolve, 500));
    running = false;
    await Promise.all(clients);
    const later = await ask();

    for (const answer of [...answers, later]) {
      expect(answer.answer).to.equal(baseline.answer);
      expect(answer.tokens.context).to.equal(baseline.tokens.context);
    }
    const afterKill = answers.slice(atKill);
    const tiers = afterKill.flatMap((a) => a.chunks.map((c) => c.tier));
    console.log(
      `      ${answers.length} queries under load, all answered (${atKill} finished before the kill); after it: tiers ${JSON.stringify(countBy(tiers))}; ` +
        `the next query was served by ${JSON.stringify(countBy(later.chunks.map((c) => c.edge ?? 'computed')))}`,
    );
    expect(afterKill.length).to.be.greaterThan(0);
    expect(later.chunks.every((c) => c.edge !== victim.ready.url)).to.equal(true);
    expect(later.chunks.every((c) => c.tier !== 'computed')).to.equal(true);
  });
});

function countBy(values: string[]): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const v of values) counts[v] = (counts[v] ?? 0) + 1;
  return counts;
}
