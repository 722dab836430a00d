import { expect } from 'chai';
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { QueryResponse } from '../../kdn/client/api-client.ts';
import type { JobView } from '../../kdn/ingest/jobs.ts';
import { cliJson, startKdnProcess, startKdnServe, type Started } from '../../fixtures/processes.ts';
import { testModel, type TestModel } from './support/tiny-model.ts';

const DOC = `# Lighthouses

A lighthouse warns ships of rocks near the coast. Its lamp turns all night, and sailors count its flashes.

The keeper trims the wick at dusk and winds the clockwork that turns the lens. Fog calls for the horn instead.
`;

/**
 * The topology docker-compose.yml deploys: kdn and two edges in their own processes, each edge mirroring its memory
 * tier into a folder of its own (KDN_EDGE_SHM_DIR; a tmpfs volume there) that kdn sees at the same path.
 */
describe('kdn with edge processes that mirror into folders of their own (the compose topology)', function () {
  this.timeout(120_000);
  let model: TestModel;
  let dir: string;
  const edges: Started[] = [];
  let kdn: Started | undefined;

  before(async () => {
    model = await testModel();
    dir = await mkdtemp(join(tmpdir(), 'kdn-edge-procs-'));
    const origin = `file:${join(dir, 'origin')}`;
    for (const name of ['edge-1', 'edge-2']) {
      const shmDir = join(dir, 'shm', name);
      await mkdir(shmDir, { recursive: true });
      const args = ['edge', '--port', '0', '--origin', origin, '--disk-path', join(dir, `${name}-cache`), '--memory', '64MiB'];
      edges.push(await startKdnProcess(args, { KDN_EDGE_SHM_DIR: shmDir }));
    }
    const args = ['--origin', origin, '--edges', edges.map((e) => e.ready.url).join(',')];
    kdn = await startKdnServe({ model: model.dir, dataDir: join(dir, 'data'), chunkTokens: 32, codec: 'fp16', args });
  });

  after(async () => {
    await kdn?.stop('SIGTERM');
    for (const edge of edges) await edge.stop('SIGTERM');
    await model?.cleanup();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it("reads the edges' memory tiers from their folders once they hold the chunks, with the answer unchanged", async () => {
    const env = { KDN_SERVER: kdn!.ready.url };
    await writeFile(join(dir, 'lighthouses.md'), DOC);
    const jobs = await cliJson<JobView[]>(['upload', join(dir, 'lighthouses.md')], env);
    expect(jobs.map((j) => j.status)).to.deep.equal(['done']);
    const ask = (): Promise<QueryResponse> =>
      cliJson<QueryResponse>(['query', 'What does a lighthouse do?', '--doc', 'lighthouses.md', '--max-tokens', '12'], env);
    const first = await ask();
    expect(first.chunks.length).to.be.greaterThan(1);
    const second = await ask();
    expect(second.chunks.map((c) => c.tier)).to.satisfy((tiers: string[]) => tiers.every((t) => t === 'shm'));
    expect(second.answer).to.equal(first.answer);
    // Each edge keeps its chunks in its own one folder.
    let mirrored = 0;
    for (const name of ['edge-1', 'edge-2']) {
      const folders = await readdir(join(dir, 'shm', name));
      expect(folders, name).to.have.length(1);
      mirrored += (await readdir(join(dir, 'shm', name, folders[0]!))).filter((f) => f.endsWith('.kv')).length;
    }
    expect(mirrored).to.be.at.least(second.chunks.length);
  });
});
