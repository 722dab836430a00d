import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import { KdnError } from '../../common/errors.ts';
import { KdnApiClient } from '../../kdn/client/api-client.ts';
import { resolveKdnConfig, type KdnConfigInput } from '../../kdn/config.ts';
import type { JobView } from '../../kdn/ingest/jobs.ts';
import type { QueryJobView } from '../../kdn/query/query-service.ts';
import { startKdn, type RunningKdn } from '../../kdn/server.ts';
import { corpusText } from '../faults/support/corpus.ts';
import { cliJson, runCli } from '../../fixtures/processes.ts';
import { testModel, type TestModel } from './support/tiny-model.ts';

const ALICE = 'alice-key-0123456789abcdef';
const BOB = 'bob-key-0123456789abcdef0';

type Jobs = { jobs: (JobView | QueryJobView)[] };

/**
 * Holds the engine with tasks of its own on kdn's scheduler, one per query it runs at once (--engine-batch), until
 * released, so queued work can be observed.
 */
function holdEngine(kdn: RunningKdn): { release: () => void; done: Promise<void> } {
  let release!: () => void;
  const held = new Promise<void>((resolve) => (release = resolve));
  const slots = Array.from({ length: kdn.parts.config.engineBatch }, () =>
    kdn.parts.scheduler.run(() => held, { tenant: 'test-holder', priority: 'interactive', cost: 1 }),
  );
  return { release, done: Promise.all(slots).then(() => undefined) };
}

async function until<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 60_000): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

async function post(kdn: RunningKdn, key: string, path: string, body: unknown, signal?: AbortSignal): Promise<Response> {
  return fetch(`${kdn.url}${path}`, {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    body: JSON.stringify(body),
    ...(signal ? { signal } : {}),
  });
}

/**
 * The engine scheduler as clients see it, on an in-process kdn over real sockets: priorities, fairness, caps with
 * 429 + Retry-After, deadlines and cancellation while queued, and the job list.
 */
describe('kdn scheduling (queries, ingest jobs, tenants)', function () {
  this.timeout(180_000);
  let model: TestModel;
  let dir: string;
  const running: RunningKdn[] = [];

  const serve = async (input: Partial<KdnConfigInput>): Promise<RunningKdn> => {
    const config = resolveKdnConfig(
      {
        dataDir: await mkdtemp(join(dir, 'data-')),
        port: 0,
        model: model.dir,
        backend: 'cpu',
        chunkTokens: 64,
        codec: 'int8',
        apiKeys: `${ALICE}=alice,${BOB}=bob`,
        rateLimit: '0',
        fetchThreads: 0,
        ...input,
      },
      {},
    );
    const kdn = await startKdn(config);
    running.push(kdn);
    return kdn;
  };

  before(async () => {
    model = await testModel();
    dir = await mkdtemp(join(tmpdir(), 'kdn-sched-'));
  });

  after(async () => {
    for (const kdn of running) await kdn.close();
    await model?.cleanup();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it("answers /healthz and another tenant's query while a long ingest runs, before the ingest's next chunks; DELETE stops the ingest", async () => {
    const kdn = await serve({});
    const alice = new KdnApiClient(kdn.url, ALICE);
    const bob = new KdnApiClient(kdn.url, BOB);
    const { job } = await alice.upload({ title: 'long', text: corpusText(500, 4) });
    const started = await until('the ingest to store objects', async () => {
      const seen = await alice.job(job.id);
      return seen.progress.objects.done >= 2 ? seen : undefined;
    });
    expect(started.status).to.equal('running');

    const health = await fetch(`${kdn.url}/healthz`);
    expect(health.status).to.equal(200);
    const answer = await bob.query({ question: 'What does the river carry?', maxTokens: 4 });
    expect(answer.tokens.generated).to.be.greaterThan(0);
    const after = await alice.job(job.id);
    expect(after.status, 'the query must not wait for the whole ingest').to.equal('running');
    expect(after.progress.objects.done).to.be.below(after.progress.objects.total);

    const listed = await alice.jobs();
    expect(listed.jobs.map((j) => j.id)).to.include(job.id);
    expect((await bob.jobs()).jobs, "another tenant's jobs are not listed").to.deep.equal([]);
    const bobCancel = await bob.cancelJob(job.id).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(bobCancel).to.be.instanceOf(KdnError).with.property('code', 'NOT_FOUND');

    const { job: cancelled } = await alice.cancelJob(job.id);
    expect(cancelled.status).to.equal('cancelled');
    expect((cancelled as JobView).error?.code).to.equal('CANCELLED');
    const stoppedAt = (await alice.job(job.id)).progress.objects.done;
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect((await alice.job(job.id)).progress.objects.done, 'a cancelled job computes nothing more').to.equal(stoppedAt);
    expect((await alice.listDocuments()).documents, 'a cancelled ingest publishes no manifest').to.deep.equal([]);
  });

  it('gives a waiting tenant the next ingest slot before another job of the tenant holding the slots', async () => {
    const kdn = await serve({});
    const alice = new KdnApiClient(kdn.url, ALICE);
    const bob = new KdnApiClient(kdn.url, BOB);
    const hold = holdEngine(kdn);
    const ids: string[] = [];
    try {
      for (let i = 0; i < 3; i++) ids.push((await alice.upload({ title: `a${i}`, text: corpusText(8, 20 + i) })).job.id);
      const b = (await bob.upload({ title: 'b', text: corpusText(8, 30) })).job.id;
      expect((await alice.job(ids[2]!)).status, 'both slots are taken by alice').to.equal('queued');
      hold.release();
      await until("bob's job to start", async () => ((await bob.job(b)).status === 'queued' ? undefined : true));
      expect((await alice.job(ids[2]!)).status, "alice's third job waits for bob's").to.equal('queued');
      await bob.waitForJob(b);
      for (const id of ids) await alice.waitForJob(id);
    } finally {
      hold.release();
      await hold.done;
    }
  });

  it('ends a query whose deadline passes while it waits, at its deadline, with TIMEOUT', async () => {
    const kdn = await serve({ queryTimeoutMs: 500 });
    const hold = holdEngine(kdn);
    try {
      const res = await post(kdn, ALICE, '/v1/query', { question: 'Who guards the harbour?', maxTokens: 4 });
      expect(res.status).to.equal(504);
      const body = (await res.json()) as { error: { code: string; message: string } };
      expect(body.error.code).to.equal('TIMEOUT');
      expect(body.error.message).to.contain('waiting for the engine');
      expect(kdn.parts.scheduler.depth, 'only the holder is left on the engine').to.equal(kdn.parts.config.engineBatch);
    } finally {
      hold.release();
      await hold.done;
    }
  });

  it('lists a queued query, cancels it with DELETE (409 CANCELLED), and drops one whose client went away', async () => {
    const kdn = await serve({});
    const alice = new KdnApiClient(kdn.url, ALICE);
    const hold = holdEngine(kdn);
    try {
      const pending = post(kdn, ALICE, '/v1/query', { question: 'What does the wind cross?', maxTokens: 4 });
      const queued = await until('the query to be queued', async () => {
        const { jobs } = (await alice.jobs({ kind: 'query' })) as Jobs;
        return jobs.find((j) => j.status === 'queued');
      });
      const { job } = await alice.cancelJob(queued.id);
      expect(job.status).to.equal('cancelled');
      const res = await pending;
      expect(res.status).to.equal(409);
      expect(((await res.json()) as { error: { code: string } }).error.code).to.equal('CANCELLED');

      const gone = new AbortController();
      const abandoned = post(kdn, ALICE, '/v1/query', { question: 'Who guards the harbour?', maxTokens: 4 }, gone.signal).catch(
        () => undefined,
      );
      await until('the second query to be queued', async () => ((await alice.jobs({ kind: 'query' })) as Jobs).jobs[0]);
      expect(kdn.parts.scheduler.depth).to.equal(kdn.parts.config.engineBatch + 1);
      gone.abort();
      await abandoned;
      const holders = kdn.parts.config.engineBatch;
      await until('the abandoned query to leave the queue', async () => (kdn.parts.scheduler.depth === holders ? true : undefined), 10_000);
      expect(((await alice.jobs({ kind: 'query' })) as Jobs).jobs).to.deep.equal([]);
    } finally {
      hold.release();
      await hold.done;
    }
  });

  it("refuses a tenant's work past its caps with 429 and Retry-After, while another tenant's is admitted", async () => {
    const kdn = await serve({ tenantMaxQueries: 2, tenantMaxJobs: 1 });
    const hold = holdEngine(kdn);
    try {
      const question = { question: 'What does the lighthouse light?', maxTokens: 2 };
      const waiting = [post(kdn, ALICE, '/v1/query', question), post(kdn, ALICE, '/v1/query', question)];
      await until('two queued queries', async () => (kdn.parts.scheduler.waiting('alice', 'interactive') === 2 ? true : undefined));
      const refused = await post(kdn, ALICE, '/v1/query', question);
      expect(refused.status).to.equal(429);
      expect(refused.headers.get('retry-after')).to.match(/^[1-9]\d*$/);
      expect(((await refused.json()) as { error: { code: string } }).error.code).to.equal('RATE_LIMITED');
      const bobs = post(kdn, BOB, '/v1/query', question);

      const upload = (key: string, title: string): Promise<Response> =>
        post(kdn, key, '/v1/documents', { title, text: corpusText(20, title.length) });
      expect((await upload(ALICE, 'first')).status).to.equal(202);
      const second = await upload(ALICE, 'second document');
      expect(second.status).to.equal(429);
      expect(second.headers.get('retry-after')).to.match(/^[1-9]\d*$/);
      expect((await upload(BOB, 'bobs')).status).to.equal(202);

      hold.release();
      for (const res of [...(await Promise.all(waiting)), await bobs]) expect(res.status).to.equal(200);
    } finally {
      hold.release();
      await hold.done;
    }
  });
});

describe('kdn jobs (CLI)', function () {
  this.timeout(120_000);
  let model: TestModel;
  let dir: string;
  let kdn: RunningKdn;

  before(async () => {
    model = await testModel({ preferShipped: false });
    dir = await mkdtemp(join(tmpdir(), 'kdn-jobs-cli-'));
    kdn = await startKdn(
      resolveKdnConfig(
        {
          dataDir: join(dir, 'data'),
          port: 0,
          model: model.dir,
          backend: 'cpu',
          chunkTokens: 16,
          apiKeys: `${ALICE}=alice`,
          rateLimit: '0',
        },
        {},
      ),
    );
  });

  after(async () => {
    await kdn?.close();
    await model?.cleanup();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it("lists the tenant's jobs, cancels one, and fails with NOT_FOUND and a non-zero exit for an unknown id", async () => {
    const env = { KDN_SERVER: kdn.url, KDN_API_KEY: ALICE };
    const hold = holdEngine(kdn);
    try {
      const { job } = await new KdnApiClient(kdn.url, ALICE).upload({ title: 'held', text: corpusText(30, 9) });
      const listed = await cliJson<Jobs>(['jobs'], env);
      expect(listed.jobs.map((j) => j.id)).to.include(job.id);
      const cancelled = await cliJson<JobView>(['jobs', 'cancel', job.id], env);
      expect(cancelled.status).to.equal('cancelled');
      expect((await cliJson<Jobs>(['jobs', '--status', 'cancelled'], env)).jobs.map((j) => j.id)).to.deep.equal([job.id]);
      const unknown = await runCli(['jobs', 'cancel', 'ffffffffffffffff'], env);
      expect(unknown.code).to.not.equal(0);
      expect(unknown.stderr).to.contain('NOT_FOUND');
      const bad = await runCli(['jobs', 'cancel', 'not-an-id'], env);
      expect(bad.code).to.not.equal(0);
      expect(bad.stderr).to.contain('INVALID_ARGUMENT');
    } finally {
      hold.release();
      await hold.done;
    }
  });
});
