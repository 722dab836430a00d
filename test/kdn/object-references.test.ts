import { existsSync } from 'node:fs';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { expect } from 'chai';
import type { UploadResponse } from '../../kdn/client/api-client.ts';
import type { JobView } from '../../kdn/ingest/jobs.ts';
import { corpusText } from '../faults/support/corpus.ts';
import { KEYS, startSecurityStack, type SecurityStack } from '../security/support/stack.ts';

interface Detail {
  chunks: { independent: { key: string }; chained: { key: string } | null }[];
}

const keysOf = (detail: Detail): string[] => detail.chunks.flatMap((c) => [c.independent.key, ...(c.chained ? [c.chained.key] : [])]);

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** Every file under the origin's chunk objects. */
async function originObjects(originDir: string): Promise<Set<string>> {
  const root = join(originDir, 'objects', 'kv');
  if (!existsSync(root)) return new Set();
  const entries = await readdir(root, { recursive: true, withFileTypes: true });
  return new Set(entries.filter((e) => e.isFile()).map((e) => join(e.parentPath, e.name)));
}

/**
 * Chunk objects are content addressed, so documents share them; what decides whether one may be deleted is every
 * reference to it: published manifests and the ingest jobs still running. A delete must not take an object a running
 * job counts on, and a job that stops without publishing must not leave its objects behind.
 */
describe('chunk objects referenced by unfinished ingest jobs', function () {
  this.timeout(240_000);
  let stack: SecurityStack;

  before(async () => {
    stack = await startSecurityStack();
  });

  after(async () => {
    await stack?.close();
  });

  const start = async (title: string, text: string): Promise<{ id: string; job: JobView }> => {
    const answer = await stack.call(KEYS.alice, 'POST', '/v1/documents', { namespace: 'race', title, text });
    expect(answer.status, JSON.stringify(answer.body)).to.equal(202);
    const { job, document } = answer.body as unknown as UploadResponse;
    return { id: document.id, job };
  };

  const job = async (id: string): Promise<JobView> => (await stack.call(KEYS.alice, 'GET', `/v1/jobs/${id}`)).body as unknown as JobView;

  /** Polls the job until `until` holds of it, failing if it finishes first. */
  const waitFor = async (id: string, until: (view: JobView) => boolean): Promise<JobView> => {
    for (;;) {
      const view = await job(id);
      if (until(view)) return view;
      expect(view.finishedAt, `job ${id} finished early: ${JSON.stringify(view)}`).to.equal(undefined);
      await sleep(20);
    }
  };

  it('a delete keeps the objects a running job found present, and the published manifest names only objects the origin has', async () => {
    const shared = corpusText(40, 11);
    const y = await stack.upload(KEYS.alice, { namespace: 'race', title: 'y.txt', text: shared });
    // X begins with Y's text, so it finds Y's leading objects present and skips them, then computes its long tail.
    const x = await start('x.txt', `${shared} ${corpusText(600, 12)}`);
    await waitFor(x.job.id, (view) => view.progress.objects.skipped > 0 && view.progress.objects.computed > 0);

    const deleted = await stack.call(KEYS.alice, 'DELETE', `/v1/documents/${y.id}?namespace=race`);
    expect(deleted.status, JSON.stringify(deleted.body)).to.equal(200);
    const during = await job(x.job.id);
    expect(during.status, 'x.txt must still be ingesting when y.txt is deleted').to.equal('running');

    for (;;) {
      const view = await job(x.job.id);
      if (view.finishedAt) {
        expect(view.status, JSON.stringify(view)).to.equal('done');
        break;
      }
      await sleep(100);
    }
    const detail = (await stack.call(KEYS.alice, 'GET', `/v1/documents/${x.id}?namespace=race`)).body as unknown as Detail;
    const missing = keysOf(detail).filter((key) => !existsSync(join(stack.originDir, 'objects', ...key.split('/'))));
    expect(missing, 'objects x.txt names that are gone from the origin').to.deep.equal([]);
    const sharedKept = (deleted.body.objects as { sharedKept: number }).sharedKept;
    expect(sharedKept, 'the delete reports the objects x.txt counts on as kept').to.be.at.least(during.progress.objects.skipped);
  });

  it('a cancelled job deletes the objects it wrote and keeps those a published document uses', async () => {
    const kept = corpusText(30, 21);
    await stack.upload(KEYS.alice, { namespace: 'race', title: 'kept.txt', text: kept });
    const before = await originObjects(stack.originDir);
    const doomed = await start('doomed.txt', `${kept} ${corpusText(600, 22)}`);
    await waitFor(doomed.job.id, (view) => view.progress.objects.computed >= 2);

    const cancelled = await stack.call(KEYS.alice, 'DELETE', `/v1/jobs/${doomed.job.id}`);
    expect(cancelled.status, JSON.stringify(cancelled.body)).to.equal(200);
    const view = await job(doomed.job.id);
    expect(view.status).to.equal('cancelled');
    expect(view.progress.objects.computed, 'the job wrote objects before it stopped').to.be.at.least(2);
    expect(view.progress.objects.skipped, 'the job found kept.txt objects present').to.be.greaterThan(0);
    const left = [...(await originObjects(stack.originDir))].filter((file) => !before.has(file));
    expect(left, 'objects of the cancelled job left at the origin').to.deep.equal([]);
  });
});
