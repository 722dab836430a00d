/**
 * kdn serve with the transform codec, end to end: a query on a document ingested as transform objects injects them
 * (the table read from the origin and given to the engine on the way), and a query after the table went missing
 * from the origin, in a fresh server, computes its chunks instead.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import type { QueryResponse } from '../../kdn/client/api-client.ts';
import type { JobView } from '../../kdn/ingest/jobs.ts';
import { TRANSFORM_TABLE_PREFIX } from '../../storage/keys.ts';
import { openStore } from '../../storage/open-store.ts';
import { cliJson, startKdnServe, type Started } from '../../fixtures/processes.ts';
import { testModel, type TestModel } from './support/tiny-model.ts';

const TEXT = `The harbour master decides where each ship may anchor. Tides rise and fall twice a day, so deep ships wait
for high water. A lighthouse warns ships of rocks near the coast; its lamp turns all night and sailors count the
flashes to know which light they see. In winter the bay sometimes freezes and the ferry stays in port for weeks.`;

describe('kdn queries over transform-codec objects', function () {
  this.timeout(300_000);
  let model: TestModel;
  let dir: string;
  let server: Started | undefined;

  const serve = async (codec: string): Promise<Started> =>
    startKdnServe({ model: model.dir, dataDir: join(dir, 'data'), chunkTokens: 32, codec });
  const query = (): Promise<QueryResponse> =>
    cliJson<QueryResponse>(['query', 'What does a lighthouse do?', '--doc', 'harbour.txt', '--max-tokens', '8'], {
      KDN_SERVER: server!.ready.url,
    });

  before(async () => {
    // The tiny model: fitting a table on the shipped model takes over a minute of CPU.
    model = await testModel({ preferShipped: false });
    dir = await mkdtemp(join(tmpdir(), 'kdn-transform-query-'));
  });
  after(async () => {
    await server?.stop();
    await model?.cleanup();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('injects the objects, then computes the chunks once their table is gone from the origin', async () => {
    server = await serve('transform:x8');
    const file = join(dir, 'harbour.txt');
    await writeFile(file, TEXT);
    const [job] = await cliJson<JobView[]>(['upload', file], { KDN_SERVER: server.ready.url });
    expect(job!.status).to.equal('done');
    const injected = await query();
    const { reused, context } = injected.tokens;
    console.log(`      injected: ${JSON.stringify(injected.chunks.map((c) => c.tier))}, ${reused} of ${context} tokens reused`);
    expect(injected.chunks.length).to.be.greaterThan(1);
    expect(injected.chunks.every((c) => c.tier !== 'computed')).to.equal(true);
    expect(injected.tokens.reused).to.equal(injected.tokens.context);
    await server.stop();

    // A fresh server (no table in memory; ingesting int4, so it fits no table of its own) whose origin lost the table:
    // every chunk falls back to recompute.
    const origin = openStore(`file:${join(dir, 'data', 'origin')}`);
    try {
      for await (const info of origin.list(TRANSFORM_TABLE_PREFIX)) await origin.delete(info.key);
    } finally {
      await origin.close();
    }
    server = await serve('int4');
    const computed = await query();
    console.log(`      without the table: ${JSON.stringify(computed.chunks.map((c) => c.tier))}`);
    expect(computed.chunks.every((c) => c.tier === 'computed')).to.equal(true);
    expect(computed.tokens.reused).to.equal(0);
  });
});
