import { expect } from 'chai';
import { join } from 'node:path';
import type { KdnApiClient } from '../../kdn/client/api-client.ts';
import { testModel, type TestModel } from '../kdn/support/tiny-model.ts';
import { corpusText } from './support/corpus.ts';
import { recordFigures } from './support/figures.ts';
import { healthy, ingest, kdnClient, metrics, metricValue } from './support/kdn-api.ts';
import { mib, MiB, percentile, rssBytes } from './support/proc-stats.ts';
import { startKdn, tempDir, type Started } from './support/stack.ts';

const CLIENTS = 32;
/** 20 s in the suite; `npm run bench -- faults` runs a minute for its throughput and memory figures. */
const DURATION_MS = Number(process.env.KDN_FAULTS_LOAD_SECONDS ?? 20) * 1000;
const METRICS_EVERY_MS = 250;
const RSS_EVERY_MS = 1_000;
/** Resident memory kdn may gain between the end of the first tenth of the run and its end. */
const RSS_DRIFT_LIMIT = 128 * MiB;
const QUESTIONS = ['What does the river carry?', 'Who guards the harbour?', 'What does the lighthouse light?', 'What does the wind cross?'];

/**
 * Load: 32 clients query `kdn serve` back to back (KDN_FAULTS_LOAD_SECONDS). No query may fail, the engine queue must
 * visibly fill (its depth gauge in /metrics), and kdn's memory must stay flat. Throughput and latency are reported.
 */
describe('fault: sustained load from 32 clients', function () {
  this.timeout(DURATION_MS + 120_000);
  let model: TestModel;
  let tmp: { dir: string; cleanup: () => Promise<void> };
  let kdn: Started;
  let api: KdnApiClient;

  before(async () => {
    model = await testModel();
    tmp = await tempDir('kdn-fault-load-');
    kdn = await startKdn({ model: model.dir, dataDir: join(tmp.dir, 'data'), chunkTokens: 64 });
    api = kdnClient(kdn.ready.url);
    await ingest(api, 'river', corpusText(40, 1));
    await ingest(api, 'harbour', corpusText(40, 2));
  });

  after(async () => {
    await kdn?.stop();
    await model?.cleanup();
    await tmp?.cleanup();
  });

  it(`answers ${CLIENTS} concurrent clients for ${DURATION_MS / 1000} s without errors`, async () => {
    const latencies: number[] = [];
    const errors: string[] = [];
    const depths: number[] = [];
    const rss: number[] = [];
    const started = performance.now();
    const deadline = started + DURATION_MS;

    const client = async (id: number): Promise<void> => {
      for (let n = 0; performance.now() < deadline; n++) {
        const start = performance.now();
        try {
          const answer = await api.query({ question: QUESTIONS[(id + n) % QUESTIONS.length]!, topK: 2, maxTokens: 8 });
          if (answer.chunks.length === 0) throw new Error('no knowledge retrieved');
          latencies.push(performance.now() - start);
        } catch (err) {
          errors.push((err as Error).message);
        }
      }
    };
    const sampler = async (everyMs: number, sample: () => Promise<void>): Promise<void> => {
      while (performance.now() < deadline) {
        await sample();
        await new Promise((resolve) => setTimeout(resolve, everyMs));
      }
    };
    await Promise.all([
      ...Array.from({ length: CLIENTS }, (_, id) => client(id)),
      sampler(METRICS_EVERY_MS, async () => {
        const depth = metricValue(await metrics(kdn.ready.url, DURATION_MS + 60_000), 'kdn_engine_queue_depth');
        if (depth !== undefined) depths.push(depth);
      }),
      sampler(RSS_EVERY_MS, async () => {
        rss.push(await rssBytes(kdn.child.pid!));
      }),
    ]);
    const seconds = (performance.now() - started) / 1000;

    const settled = rss[Math.floor(rss.length / 10)] ?? rss[0]!;
    const last = rss[rss.length - 1]!;
    recordFigures('load', {
      clients: CLIENTS,
      seconds: Math.round(seconds),
      model: model.kind,
      queries: latencies.length,
      errors: errors.length,
      throughputQps: Math.round((latencies.length / seconds) * 100) / 100,
      latencyP50Ms: Math.round(percentile(latencies, 50)),
      latencyP99Ms: Math.round(percentile(latencies, 99)),
      maxQueueDepth: Math.max(0, ...depths),
      rssSettledMiB: mib(settled),
      rssEndMiB: mib(last),
      rssMaxMiB: mib(Math.max(...rss)),
    });
    expect(errors.slice(0, 5)).to.deep.equal([]);
    expect(latencies.length).to.be.at.least(CLIENTS);
    expect(Math.max(0, ...depths), 'queue depth seen in /metrics').to.be.greaterThan(0);
    expect(last - settled, 'RSS drift').to.be.below(RSS_DRIFT_LIMIT);
    expect(await healthy(kdn.ready.url)).to.equal(true);
  });
});
