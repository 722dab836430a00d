import { expect } from 'chai';
import { join } from 'node:path';
import type { KdnApiClient, QueryResponse } from '../../kdn/client/api-client.ts';
import { testModel, type TestModel } from '../kdn/support/tiny-model.ts';
import { corpusText } from './support/corpus.ts';
import { recordFigures } from './support/figures.ts';
import { ingest, kdnClient } from './support/kdn-api.ts';
import { startEdgeProcess, startKdn, startS3Process, tempDir, type Started } from './support/stack.ts';

const CLIENTS = 6;
/** Queries run this long before the kill and this long after it. */
const BEFORE_KILL_MS = 1_500;
const AFTER_KILL_MS = 2_500;

/**
 * Edge loss: kdn, three edge processes and an s3rver origin, each its own process. Several clients query a document
 * whose chunk objects are large (fp16, 256-token chunks of the shipped model: ~0.8 MB each) while the busiest edge is
 * SIGKILLed, so the kill lands while queries are fetching from it. Every query must still answer.
 */
describe('fault: an edge process killed mid-transfer', function () {
  this.timeout(180_000);
  let model: TestModel;
  let tmp: { dir: string; cleanup: () => Promise<void> };
  let s3: Started;
  const edges: Started[] = [];
  let kdn: Started;
  let api: KdnApiClient;

  before(async () => {
    model = await testModel();
    tmp = await tempDir('kdn-fault-edge-loss-');
    s3 = await startS3Process(join(tmp.dir, 's3'), 'kdn-edge-loss');
    // Started together: each start is mostly Node loading the CLI.
    const started = await Promise.allSettled(
      [0, 1, 2].map((i) =>
        startEdgeProcess(['--origin', s3.ready.url, '--disk-path', join(tmp.dir, `edge-${i}`), '--memory', '64MiB', '--disk', '256MiB']),
      ),
    );
    for (const edge of started) if (edge.status === 'fulfilled') edges.push(edge.value);
    for (const edge of started) if (edge.status === 'rejected') throw edge.reason;
    kdn = await startKdn({
      model: model.dir,
      dataDir: join(tmp.dir, 'kdn'),
      codec: 'fp16',
      chunkTokens: model.kind === 'shipped' ? 256 : 64,
      args: ['--origin', s3.ready.url, '--edges', edges.map((e) => e.ready.url).join(',')],
    });
    api = kdnClient(kdn.ready.url);
  });

  after(async () => {
    await kdn?.stop();
    for (const edge of edges) await edge.stop();
    await s3?.stop('SIGTERM');
    await model?.cleanup();
    await tmp?.cleanup();
  });

  it('answers every query while one of three edges is SIGKILLed', async () => {
    await ingest(api, 'harbour', corpusText(90, 5));
    const ask = (): Promise<QueryResponse> =>
      api.query({ question: 'What does the lighthouse light?', documents: ['harbour'], maxTokens: 4 });
    const baseline = await ask();
    const perEdge = new Map<string, number>();
    for (const chunk of baseline.chunks) perEdge.set(chunk.edge!, (perEdge.get(chunk.edge!) ?? 0) + chunk.bytes);
    expect(perEdge.size, 'chunk objects spread over the edges').to.be.at.least(2);
    const victim = edges.find((e) => e.ready.url === [...perEdge].sort((a, b) => b[1] - a[1])[0]![0])!;

    let answered = 0;
    let failed = 0;
    let inFlight = 0;
    let running = true;
    const failures: string[] = [];
    const client = async (): Promise<void> => {
      while (running) {
        inFlight++;
        try {
          const answer = await ask();
          expect(answer.answer).to.equal(baseline.answer);
          answered++;
        } catch (err) {
          failed++;
          failures.push((err as Error).message);
        } finally {
          inFlight--;
        }
      }
    };
    const clients = Array.from({ length: CLIENTS }, client);
    await new Promise((resolve) => setTimeout(resolve, BEFORE_KILL_MS));
    const inFlightAtKill = inFlight;
    const answeredAtKill = answered;
    await victim.stop('SIGKILL');
    await new Promise((resolve) => setTimeout(resolve, AFTER_KILL_MS));
    running = false;
    await Promise.all(clients);

    recordFigures('edgeLoss', {
      edges: edges.length,
      clients: CLIENTS,
      objectBytes: Math.max(...baseline.chunks.map((c) => c.bytes)),
      queriesAnswered: answered,
      queriesFailed: failed,
      answeredBeforeKill: answeredAtKill,
      inFlightAtKill,
    });
    expect(failures).to.deep.equal([]);
    expect(inFlightAtKill, 'queries in flight when the edge died').to.be.greaterThan(0);
    expect(answered).to.be.greaterThan(answeredAtKill);
  });
});
