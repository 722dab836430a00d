import { expect } from 'chai';
import { join } from 'node:path';
import type { KdnApiClient } from '../../kdn/client/api-client.ts';
import { testModel, type TestModel } from '../kdn/support/tiny-model.ts';
import type { JobView } from '../../kdn/ingest/jobs.ts';
import { openStore } from '../../storage/open-store.ts';
import { verifyKVObject } from '../../storage/kv-object/index.ts';
import { corpusText } from './support/corpus.ts';
import { recordFigures } from './support/figures.ts';
import { ingest, kdnClient } from './support/kdn-api.ts';
import { startKdn, tempDir, type Started } from './support/stack.ts';

/** Objects the first ingest must have finished before kdn is killed, so the kill lands mid-upload. */
const KILL_AFTER_OBJECTS = 4;

/**
 * Crash mid-ingest: kdn is SIGKILLed while an upload's job is computing chunk objects, restarted on the same data
 * directory, and the document uploaded again. Every object at the origin must verify (writes are atomic), the
 * second job must skip exactly the objects the first finished and compute only the rest.
 */
describe('fault: kdn killed in the middle of an ingest', function () {
  this.timeout(180_000);
  let model: TestModel;
  let tmp: { dir: string; cleanup: () => Promise<void> };
  let kdn: Started | undefined;

  const serve = async (): Promise<KdnApiClient> => {
    kdn = await startKdn({ model: model.dir, dataDir: join(tmp.dir, 'data'), codec: 'int8', chunkTokens: 64 });
    return kdnClient(kdn.ready.url);
  };

  before(async () => {
    model = await testModel();
    tmp = await tempDir('kdn-fault-crash-');
  });

  after(async () => {
    await kdn?.stop();
    await model?.cleanup();
    await tmp?.cleanup();
  });

  it('resumes after SIGKILL with no partial objects and nothing computed twice', async () => {
    const text = corpusText(60, 3);
    let api = await serve();
    const { job } = await api.upload({ title: 'long', text });
    let seen: JobView = job;
    while (seen.progress.objects.done < KILL_AFTER_OBJECTS && seen.status !== 'done' && seen.status !== 'failed') {
      await new Promise((resolve) => setTimeout(resolve, 10));
      seen = await api.job(job.id);
    }
    await kdn!.stop('SIGKILL');
    expect(seen.status, 'the job must still be running when kdn is killed').to.equal('running');
    const total = seen.progress.objects.total;

    const origin = openStore(`file:${join(tmp.dir, 'data', 'origin')}`);
    let stored = 0;
    let broken = 0;
    let manifests = 0;
    try {
      for await (const info of origin.list('kv/')) {
        try {
          verifyKVObject(await origin.get(info.key));
          stored++;
        } catch {
          broken++;
        }
      }
      for await (const _ of origin.list('manifests/')) manifests++;
    } finally {
      await origin.close();
    }
    expect(broken, 'objects at the origin that fail verification').to.equal(0);
    expect(manifests, 'a manifest is published only after all of its objects').to.equal(0);
    expect(stored).to.be.at.least(seen.progress.objects.done).and.below(total);

    api = await serve();
    const again = await ingest(api, 'long', text);
    const { computed, skipped } = again.progress.objects;
    recordFigures('crashIngest', {
      objectsTotal: total,
      doneAtKill: seen.progress.objects.done,
      storedAtKill: stored,
      partialObjects: broken,
      skippedOnRetry: skipped,
      computedOnRetry: computed,
      computedTwice: stored + computed - total,
    });
    expect(again.progress.objects.total).to.equal(total);
    expect(skipped).to.equal(stored);
    expect(computed).to.equal(total - stored);
    const answer = await api.query({ question: 'What does the river carry?', topK: 4, maxTokens: 4 });
    expect(answer.chunks.every((c) => c.tier !== 'computed')).to.equal(true);
  });
});
