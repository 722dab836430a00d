import { expect } from 'chai';
import { join } from 'node:path';
import type { QueryResponse } from '../../kdn/client/api-client.ts';
import { testModel, type TestModel } from '../kdn/support/tiny-model.ts';
import { corpusText } from './support/corpus.ts';
import { recordFigures } from './support/figures.ts';
import { ingest, kdnClient } from './support/kdn-api.ts';
import { startEdgeProcess, startKdn, startS3Process, tempDir, type Started } from './support/stack.ts';

const ORIGIN_TIMEOUT_MS = 1_000;
/** kdn tries a chunk object twice (run-query.ts FETCH_ATTEMPTS), each bounded by the edge's origin timeout. */
const FETCH_ATTEMPTS = 2;
/** Slack for the engine's own work on top of the fetch bound: generous, this proves "no hang", not speed. */
const SLACK_MS = 15_000;
const QUERIES_EACH = 2;

/**
 * Origin loss: the S3 server is frozen (SIGSTOP: connections open but nothing answers, the worst case for a
 * client). Knowledge the edge already holds is still served from it; knowledge it does not hold is recomputed;
 * no query waits past the origin timeout's bound.
 */
describe('fault: the S3 origin stops answering', function () {
  this.timeout(180_000);
  let model: TestModel;
  let tmp: { dir: string; cleanup: () => Promise<void> };
  let s3: Started;
  let edge: Started | undefined;
  let kdn: Started | undefined;

  before(async () => {
    model = await testModel({ preferShipped: false });
    tmp = await tempDir('kdn-fault-origin-loss-');
    s3 = await startS3Process(join(tmp.dir, 's3'), 'kdn-origin-loss');
  });

  after(async () => {
    await kdn?.stop();
    await edge?.stop();
    await s3?.stop('SIGKILL');
    await model?.cleanup();
    await tmp?.cleanup();
  });

  it('serves what the edge holds, recomputes the rest, and never hangs', async () => {
    const serving = { model: model.dir, codec: 'int8', chunkTokens: 24 };
    // Ingest through a kdn with its own embedded edge, then serve through a fresh edge that holds nothing yet.
    const ingester = await startKdn({ ...serving, dataDir: join(tmp.dir, 'ingest'), args: ['--origin', s3.ready.url] });
    const ingestApi = kdnClient(ingester.ready.url);
    await ingest(ingestApi, 'held', corpusText(30, 1));
    await ingest(ingestApi, 'cold', corpusText(30, 2));
    await ingester.stop('SIGTERM');

    edge = await startEdgeProcess([
      '--origin',
      s3.ready.url,
      '--disk-path',
      join(tmp.dir, 'edge'),
      '--origin-timeout',
      String(ORIGIN_TIMEOUT_MS),
    ]);
    kdn = await startKdn({ ...serving, dataDir: join(tmp.dir, 'kdn'), args: ['--edges', edge.ready.url, '--origin', s3.ready.url] });
    const api = kdnClient(kdn.ready.url);
    const ask = (doc: string): Promise<QueryResponse> =>
      api.query({ question: 'What does the harbour guard?', documents: [doc], maxTokens: 8 });
    const warm = await ask('held');
    expect(warm.chunks.every((c) => c.tier === 'origin')).to.equal(true);

    s3.child.kill('SIGSTOP');
    const latencies: number[] = [];
    const timed = async (doc: string): Promise<QueryResponse> => {
      const start = performance.now();
      const answer = await ask(doc);
      latencies.push(performance.now() - start);
      return answer;
    };
    const held: QueryResponse[] = [];
    const cold: QueryResponse[] = [];
    for (let i = 0; i < QUERIES_EACH; i++) {
      held.push(await timed('held'));
      cold.push(await timed('cold'));
    }
    const both = await timed('held').then(() => Promise.all([timed('held'), timed('cold')]));

    const heldTiers = held.flatMap((a) => a.chunks.map((c) => c.tier));
    const coldTiers = cold.flatMap((a) => a.chunks.map((c) => c.tier));
    const bound = FETCH_ATTEMPTS * ORIGIN_TIMEOUT_MS + SLACK_MS;
    const maxLatency = Math.max(...latencies);
    recordFigures('originLoss', {
      queriesAnswered: latencies.length,
      queriesFailed: 0,
      chunksServedFromEdge: heldTiers.filter((t) => t === 'memory' || t === 'disk').length,
      chunksRecomputed: coldTiers.filter((t) => t === 'computed').length,
      originTimeoutMs: ORIGIN_TIMEOUT_MS,
      maxQueryMs: Math.round(maxLatency),
      boundMs: bound,
    });
    expect(
      heldTiers.every((t) => t === 'memory' || t === 'disk'),
      `held tiers ${heldTiers}`,
    ).to.equal(true);
    expect(
      coldTiers.every((t) => t === 'computed'),
      `cold tiers ${coldTiers}`,
    ).to.equal(true);
    expect(both.map((a) => a.chunks.length)).to.deep.equal([held[0]!.chunks.length, cold[0]!.chunks.length]);
    expect(cold[0]!.answer).to.be.a('string');
    expect(maxLatency).to.be.below(bound);
  });
});
