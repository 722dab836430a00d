import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import { KdnApiClient } from '../../kdn/client/api-client.ts';
import type { JobView } from '../../kdn/ingest/jobs.ts';
import { verifyKVObject } from '../../storage/kv-object/index.ts';
import { openStore } from '../../storage/open-store.ts';
import { corpusText } from '../faults/support/corpus.ts';
import { TEST_API_KEY, startKdnServe, type Started } from '../../fixtures/processes.ts';
import { testModel, type TestModel } from './support/tiny-model.ts';

const BOUND_MS = 3_000;

/**
 * SIGTERM to `kdn serve` with ingest jobs running and queued: the process must exit on its own, soon after the
 * shutdown bound, leaving every object at the origin whole and no manifest of an unfinished document; a restarted
 * kdn resumes the upload from the objects that were finished.
 */
describe('kdn serve graceful shutdown (SIGTERM)', function () {
  this.timeout(180_000);
  let model: TestModel;
  let dir: string;
  let kdn: Started | undefined;

  const serve = (boundMs = BOUND_MS, data = 'data'): Promise<Started> =>
    startKdnServe({ model: model.dir, dataDir: join(dir, data), chunkTokens: 64, args: ['--shutdown-timeout', String(boundMs)] });

  const exitAfterSigterm = async (started: Started): Promise<{ code: number | null; tookMs: number } | undefined> => {
    const exited = new Promise<number | null>((resolve) => started.child.once('exit', (code) => resolve(code)));
    const termAt = Date.now();
    started.child.kill('SIGTERM');
    const code = await Promise.race([exited, new Promise<'running'>((resolve) => setTimeout(() => resolve('running'), 60_000))]);
    return code === 'running' ? undefined : { code, tookMs: Date.now() - termAt };
  };

  before(async () => {
    model = await testModel();
    dir = await mkdtemp(join(tmpdir(), 'kdn-shutdown-'));
  });

  after(async () => {
    await kdn?.stop();
    await model?.cleanup();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('exits within the bound with queued work, with nothing half written, and the upload resumes after a restart', async () => {
    kdn = await serve();
    const api = new KdnApiClient(kdn.ready.url, TEST_API_KEY);
    const texts = [corpusText(60, 5), corpusText(60, 6), corpusText(60, 7)];
    const jobs: JobView[] = [];
    for (const [i, text] of texts.entries()) jobs.push((await api.upload({ title: `doc-${i}`, text })).job);
    let seen = jobs[0]!;
    while (seen.progress.objects.done < 2 && seen.status !== 'done' && seen.status !== 'failed') {
      await new Promise((resolve) => setTimeout(resolve, 20));
      seen = await api.job(seen.id);
    }
    expect(seen.status, 'the first job must be running at SIGTERM').to.equal('running');
    const statuses = await Promise.all(jobs.slice(1).map((j) => api.job(j.id).then((v) => v.status)));
    expect(statuses.filter((s) => s === 'queued').length, 'work still queued at SIGTERM').to.be.at.least(1);

    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
      kdn!.child.once('exit', (code, signal) => resolve({ code, signal })),
    );
    const termAt = Date.now();
    kdn.child.kill('SIGTERM');
    const outcome = await Promise.race([exited, new Promise<undefined>((resolve) => setTimeout(() => resolve(undefined), 60_000))]);
    const tookMs = Date.now() - termAt;
    console.log(`      exited ${JSON.stringify(outcome)} ${tookMs} ms after SIGTERM (bound ${BOUND_MS} ms)`);
    expect(outcome, `kdn still running 60 s after SIGTERM:\n${kdn.stderr()}`).to.not.equal(undefined);
    expect(outcome!.code, kdn.stderr()).to.equal(0);
    // The bound plus the last chunk's store and the closing of the edge, the fetch threads and the origin.
    expect(tookMs).to.be.below(BOUND_MS + 15_000);

    const originDir = join(dir, 'data', 'origin');
    const temp = await readdir(join(originDir, '.tmp')).catch(() => [] as string[]);
    expect(temp, 'temp files of puts in progress').to.deep.equal([]);
    const origin = openStore(`file:${originDir}`);
    let stored = 0;
    let manifests = 0;
    try {
      for await (const info of origin.list('kv/')) {
        verifyKVObject(await origin.get(info.key));
        stored++;
      }
      for await (const _ of origin.list('manifests/')) manifests++;
    } finally {
      await origin.close();
    }
    expect(manifests, 'no document finished, so no manifest').to.equal(0);
    expect(stored).to.be.at.least(seen.progress.objects.done);

    kdn = await serve();
    const again = new KdnApiClient(kdn.ready.url, TEST_API_KEY);
    const { job } = await again.upload({ title: 'doc-0', text: texts[0]! });
    const done = await again.waitForJob(job.id);
    expect(done.progress.objects.skipped, 'objects finished before SIGTERM are not computed again').to.be.at.least(
      seen.progress.objects.done,
    );
    expect(done.progress.objects.computed + done.progress.objects.skipped).to.equal(done.progress.objects.total);
  });

  it('cancels a query still computing at the bound, and exits', async () => {
    await kdn?.stop();
    kdn = await serve(500, 'data-query');
    // About 1,400 tokens to prefill: seconds of uninterruptible compute on the engine thread.
    const prompt = Array.from({ length: 200 }, (_, i) => `line ${i} of a long prompt about rivers and harbours.`)
      .join(' ')
      .slice(0, 5000);
    const answer = fetch(`${kdn.ready.url}/v1/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${TEST_API_KEY}`, 'content-type': 'application/json' },
      body: JSON.stringify({ prompt, max_tokens: 64 }),
    }).then(
      (res) => res.status,
      (err: unknown) => (err as Error).message,
    );
    const api = new KdnApiClient(kdn.ready.url, TEST_API_KEY);
    for (let running = false; !running; await new Promise((resolve) => setTimeout(resolve, 20))) {
      running = (await api.jobs({ kind: 'query' })).jobs.some((j) => j.status === 'running');
    }
    const outcome = await exitAfterSigterm(kdn);
    console.log(`      exited ${JSON.stringify(outcome)}; the query's client got ${JSON.stringify(await answer)}`);
    expect(outcome, `kdn still running 60 s after SIGTERM:\n${kdn.stderr()}`).to.not.equal(undefined);
    expect(outcome!.code, kdn.stderr()).to.equal(0);
    expect(outcome!.tookMs).to.be.below(500 + 15_000);
    expect(await answer, 'the query cannot have finished in time').to.not.equal(200);
  });
});
