import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import { secretSigner } from '../../common/edge-token.ts';
import { KdnApiClient } from '../../kdn/client/api-client.ts';
import { startS3Process } from '../faults/support/stack.ts';
import { TEST_API_KEY, TEST_EDGE_SECRET, startKdnProcess, startKdnServe, type Started } from '../../fixtures/processes.ts';
import { testModel, type TestModel } from './support/tiny-model.ts';

const AUTH = { authorization: `Bearer ${TEST_API_KEY}` };
const PROMTOOL = '/usr/bin/promtool';

/** promtool's verdict on a metrics text: its output (empty when clean) and exit status. */
function promtool(text: string): { status: number | null; output: string } {
  const run = spawnSync(PROMTOOL, ['check', 'metrics'], { input: text, encoding: 'utf8' });
  return { status: run.status, output: `${run.stdout}${run.stderr}`.trim() };
}

/** Skips a promtool check with a message where promtool is absent, except under CI=true (CI installs it). */
function requirePromtool(context: Mocha.Context): void {
  if (existsSync(PROMTOOL)) return;
  if (process.env.CI === 'true') throw new Error("promtool is not installed: .ci/run installs Debian's prometheus package");
  console.log('      skipped: promtool is not installed (apt-get install prometheus)');
  context.skip();
}

/** What an operator sees: JSON logs with request ids, Prometheus metrics promtool accepts, readiness. */
describe('operations: access logs, metrics, readiness', function () {
  this.timeout(120_000);
  let model: TestModel;
  let dir: string;
  let s3: Started | undefined;
  let kdn: Started | undefined;
  let edge: Started | undefined;
  let stderr = '';

  before(async () => {
    model = await testModel({ preferShipped: false });
    dir = await mkdtemp(join(tmpdir(), 'kdn-ops-'));
    s3 = await startS3Process(join(dir, 's3'), 'kdn-ops');
    edge = await startKdnProcess(['edge', '--port', '0', '--origin', s3.ready.url, '--disk-path', join(dir, 'edge'), '--public-metrics']);
    kdn = await startKdnServe({
      model: model.dir,
      dataDir: join(dir, 'data'),
      args: ['--origin', s3.ready.url, '--edges', edge.ready.url],
      env: { LOG_LEVEL: 'info' },
    });
    kdn.child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString('utf8')));
  });

  after(async () => {
    await kdn?.stop();
    await edge?.stop();
    await s3?.stop();
    await model?.cleanup();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('logs every request as one JSON line with its request id, and nothing but JSON on stderr', async () => {
    const url = kdn!.ready.url;
    const ok = await fetch(`${url}/v1/status`, { headers: { ...AUTH, 'x-request-id': 'ops-test-1' } });
    expect(ok.status).to.equal(200);
    const denied = await fetch(`${url}/v1/documents/some-id`);
    expect(denied.status).to.equal(401);
    const deniedId = denied.headers.get('x-request-id');
    await new Promise((resolve) => setTimeout(resolve, 200));
    const lines = stderr.split('\n').filter((l) => l !== '');
    const records = lines.map(
      (l) =>
        JSON.parse(l) as {
          req?: { id: string; method: string; path: string };
          res?: { statusCode: number };
          level: number;
          responseTime?: number;
        },
    );
    const first = records.find((r) => r.req?.id === 'ops-test-1');
    expect(first?.req).to.deep.include({ method: 'GET', path: '/v1/status' });
    expect(first?.res?.statusCode).to.equal(200);
    expect(first?.responseTime).to.be.a('number');
    expect(records.find((r) => r.req?.id === deniedId)?.res?.statusCode).to.equal(401);
    expect(stderr).to.not.contain(TEST_API_KEY);
  });

  it('labels 401s with the route they were for, and serves metrics promtool accepts', async function () {
    const url = kdn!.ready.url;
    // "%ff" cannot be decoded as a route parameter: labelling it must not take the server down.
    for (const path of ['/v1/documents', '/v1/jobs/job-1', '/v1/jobs/%ff']) expect((await fetch(`${url}${path}`)).status).to.equal(401);
    expect((await fetch(`${url}/no/such/route`, { headers: AUTH })).status).to.equal(404);
    const text = await (await fetch(`${url}/metrics`, { headers: AUTH })).text();
    expect(text).to.match(/^kdn_http_requests_total\{route="\/v1\/documents",method="GET",status="401"\} 1$/m);
    expect(text).to.match(/^kdn_http_requests_total\{route="\/v1\/jobs\/:id",method="GET",status="401"\} 2$/m);
    expect(text).to.match(/^kdn_http_requests_total\{route="unmatched",method="GET",status="404"\} 1$/m);
    requirePromtool(this);
    expect(promtool(text)).to.deep.equal({ status: 0, output: '' });
    // The check can fail: a gauge named like a counter is what promtool rejected in prom-client's defaults.
    expect(promtool('# HELP x_total a gauge\n# TYPE x_total gauge\nx_total 1\n').status).to.not.equal(0);
  });

  it("counts the engine's compute calls and busy seconds by call in /metrics", async () => {
    const url = kdn!.ready.url;
    const engineSeries = async (): Promise<Map<string, number>> => {
      const text = await (await fetch(`${url}/metrics`, { headers: AUTH })).text();
      const found = [...text.matchAll(/^(kdn_engine_(?:busy_seconds|calls|batch_sequences)_total(?:\{call="\w+"\})?) (\S+)$/gm)];
      return new Map(found.map((m) => [m[1]!, Number(m[2])]));
    };
    const before = await engineSeries();
    const api = new KdnApiClient(url, TEST_API_KEY);
    const { job } = await api.upload({ title: 'engine-work', text: 'The miller counts the ships at the harbour at night.' });
    expect((await api.waitForJob(job.id)).status).to.equal('done');
    const answer = await api.query({ question: 'Who counts the ships?', maxTokens: 3 });
    expect(answer.tokens.generated).to.be.greaterThan(0);
    const after = await engineSeries();
    for (const call of ['forward', 'batchForward', 'blendForward', 'readKV', 'saveKVRows']) {
      expect(after.has(`kdn_engine_calls_total{call="${call}"}`), call).to.equal(true);
    }
    // Ingest computed the chunk's KV and the query decoded: both ran forwards, which took time.
    const calls = (m: Map<string, number>): number =>
      (m.get('kdn_engine_calls_total{call="forward"}') ?? 0) + (m.get('kdn_engine_calls_total{call="batchForward"}') ?? 0);
    const busy = (m: Map<string, number>): number =>
      [...m].filter(([k]) => k.startsWith('kdn_engine_busy_seconds_total')).reduce((sum, [, v]) => sum + v, 0);
    expect(calls(after) - calls(before)).to.be.at.least(2);
    expect(busy(after)).to.be.greaterThan(busy(before));
    expect(after.get('kdn_engine_batch_sequences_total')).to.be.at.least(before.get('kdn_engine_batch_sequences_total') ?? 0);
  });

  it('times edge requests in a histogram by route, method and status, which promtool accepts', async function () {
    const url = edge!.ready.url;
    const key = 'kv/does-not-exist.kv';
    const token = secretSigner(TEST_EDGE_SECRET)({ method: 'GET', target: `/kv/${key}` });
    const missing = await fetch(`${url}/kv/${key}`, { headers: { 'x-kdn-token': token } });
    expect(missing.status).to.equal(404);
    expect((await fetch(`${url}/healthz`)).status).to.equal(200);
    const text = await (await fetch(`${url}/metrics`)).text();
    expect(text).to.match(/^kdn_edge_request_duration_seconds_count\{route="\/kv",method="GET",status="404"\} 1$/m);
    expect(text).to.match(/^kdn_edge_request_duration_seconds_count\{route="\/healthz",method="GET",status="200"\} 1$/m);
    requirePromtool(this);
    expect(promtool(text)).to.deep.equal({ status: 0, output: '' });
  });

  it('is ready while its origin answers, and not ready (but alive) once the origin is gone', async () => {
    const url = kdn!.ready.url;
    const ready = await fetch(`${url}/readyz`);
    expect(ready.status).to.equal(200);
    expect(((await ready.json()) as { status: string }).status).to.equal('ready');
    await s3!.stop();
    const gone = await fetch(`${url}/readyz`);
    const body = (await gone.json()) as { error: { code: string; hint?: string } };
    expect(gone.status, JSON.stringify(body)).to.be.oneOf([502, 503, 504]);
    expect(body.error.code).to.match(/^ORIGIN_/);
    expect((await fetch(`${url}/healthz`)).status).to.equal(200);
  });
});
