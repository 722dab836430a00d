import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import type { QueryResponse } from '../../kdn/client/api-client.ts';
import type { JobView } from '../../kdn/ingest/jobs.ts';
import type { DocumentSummary } from '../../kdn/manifest.ts';
import { openStore } from '../../storage/open-store.ts';
import { requireRadosgw, startRadosgw, type RunningRadosgw } from '../support/radosgw.ts';
import { cliJson, startKdnServe, type Started } from '../../fixtures/processes.ts';
import { testModel, type TestModel } from './support/tiny-model.ts';

const HARBOUR = `The harbour master decides where each ship may anchor. Tides rise and fall twice a day, so deep ships wait
for high water. A lighthouse warns ships of rocks near the coast; its lamp turns all night.`;

/** kdn on a real S3 server (Ceph radosgw on loopback) as its origin: upload, query, restart, delete. */
describe('kdn end to end on Ceph radosgw', function () {
  this.timeout(180_000);
  let rgw: RunningRadosgw | undefined;
  let model: TestModel;
  let dir: string;
  let server: Started | undefined;
  let env: NodeJS.ProcessEnv;

  let starts = 0;
  /** Each start gets an empty edge disk tier, so what the edge serves first comes from the origin. */
  const serve = async (): Promise<void> => {
    server = await startKdnServe({
      model: model.dir,
      dataDir: join(dir, 'data'),
      chunkTokens: 64,
      codec: 'int8',
      args: ['--edge-disk-path', join(dir, `edge-${++starts}`), '--origin', rgw!.url],
    });
    env = { KDN_SERVER: server.ready.url };
  };

  before(async function () {
    if (!requireRadosgw(this)) return;
    rgw = await startRadosgw('kdn-origin');
    model = await testModel();
    dir = await mkdtemp(join(tmpdir(), 'kdn-rgw-e2e-'));
    await writeFile(join(dir, 'harbour.txt'), HARBOUR);
  });

  after(async () => {
    await server?.stop();
    await model?.cleanup();
    await rgw?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('uploads and answers from chunk objects kept in radosgw, after a restart too, and deletes them there', async () => {
    await serve();
    const [job] = await cliJson<JobView[]>(['upload', join(dir, 'harbour.txt')], env);
    expect(job!.status).to.equal('done');
    expect(job!.progress.objects.computed).to.be.greaterThan(0);

    const origin = openStore(rgw!.url);
    const keys = async (): Promise<string[]> => {
      const out: string[] = [];
      for await (const info of origin.list('')) out.push(info.key);
      return out;
    };
    const stored = await keys();
    expect(stored.filter((k) => k.startsWith('manifests/'))).to.have.length(1);
    expect(stored.length).to.be.greaterThan(job!.progress.objects.total);

    const first = await cliJson<QueryResponse>(['query', 'When do deep ships wait?', '--doc', 'harbour.txt', '--max-tokens', '8'], env);
    expect(first.tokens.reused).to.equal(first.tokens.context);

    await server!.stop('SIGTERM');
    await serve();
    const list = await cliJson<{ documents: DocumentSummary[] }>(['docs', 'list'], env);
    expect(list.documents.map((d) => d.title)).to.deep.equal(['harbour.txt']);
    const again = await cliJson<QueryResponse>(['query', 'When do deep ships wait?', '--doc', 'harbour.txt', '--max-tokens', '8'], env);
    expect(again.answer).to.equal(first.answer);
    // A new process has a cold embedded edge: every chunk object came from radosgw through it.
    expect(again.chunks.every((c) => c.tier === 'origin')).to.equal(true);

    const deleted = await cliJson<{ objects: { deleted: number } }>(['docs', 'delete', 'harbour.txt'], env);
    expect(deleted.objects.deleted).to.be.greaterThan(0);
    expect((await keys()).filter((k) => k.startsWith('manifests/'))).to.deep.equal([]);
    await origin.close();
  });
});
