import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import { KdnError } from '../../common/errors.ts';
import { KdnApiClient } from '../../kdn/client/api-client.ts';
import { resolveKdnConfig } from '../../kdn/config.ts';
import { startKdn, type RunningKdn } from '../../kdn/server.ts';
import { corpusText } from '../faults/support/corpus.ts';
import { startResettingProxy } from '../support/resetting-proxy.ts';
import { testModel, type TestModel } from './support/tiny-model.ts';

const KEY = 'retry-key-0123456789abcdef';

/** The CLI's API client through a proxy that resets connections, in front of a real kdn. */
describe('kdn API client: idempotent requests survive reset connections', function () {
  this.timeout(120_000);
  let model: TestModel;
  let dir: string;
  let kdn: RunningKdn;

  before(async () => {
    model = await testModel({ preferShipped: false });
    dir = await mkdtemp(join(tmpdir(), 'kdn-client-retry-'));
    kdn = await startKdn(
      resolveKdnConfig(
        {
          dataDir: join(dir, 'data'),
          port: 0,
          model: model.dir,
          backend: 'cpu',
          chunkTokens: 16,
          apiKeys: `${KEY}=retry:operator`,
          rateLimit: '0',
          fetchThreads: 0,
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

  it('uploads and polls its job to the end while every kept-alive connection is reset', async () => {
    const proxy = await startResettingProxy(kdn.url, { reused: true });
    try {
      const api = new KdnApiClient(proxy.url, KEY);
      const { job } = await api.upload({ title: 'river', text: corpusText(30, 1) });
      const done = await api.waitForJob(job.id, undefined, 20);
      expect(done.status).to.equal('done');
      expect(proxy.resets(), 'polls that found their connection reset').to.be.greaterThan(0);
    } finally {
      await proxy.close();
    }
  });

  it('sends a GET again after fresh connections are reset, but not a document delete', async () => {
    const flaky = await startResettingProxy(kdn.url, { fresh: 2 });
    try {
      const status = await new KdnApiClient(flaky.url, KEY).status();
      expect(status).to.have.property('backend', 'cpu');
      expect(flaky.resets()).to.equal(2);
    } finally {
      await flaky.close();
    }
    const once = await startResettingProxy(kdn.url, { fresh: 1 });
    try {
      const err = await new KdnApiClient(once.url, KEY).deleteDocument('river').then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).to.be.instanceOf(KdnError);
      expect((err as KdnError).message).to.match(/ECONNRESET|socket|other side closed/i);
      expect(once.resets()).to.equal(1);
      expect((await new KdnApiClient(kdn.url, KEY).listDocuments()).documents.map((d) => d.title)).to.deep.equal(['river']);
    } finally {
      await once.close();
    }
  });
});
