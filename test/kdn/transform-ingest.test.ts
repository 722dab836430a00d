import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import { createEngine, kvBeforeRope, loadModelConfig } from '../../engine-adapter/index.ts';
import type { JobView } from '../../kdn/ingest/jobs.ts';
import type { Manifest } from '../../kdn/manifest.ts';
import { decodeKVObject, parseTransformTable, transformTables } from '../../storage/kv-object/index.ts';
import { TRANSFORM_TABLE_PREFIX, transformTableKey } from '../../storage/keys.ts';
import { openStore } from '../../storage/open-store.ts';
import { cliJson, startKdnServe, type Started } from '../../fixtures/processes.ts';
import { testModel, type TestModel } from './support/tiny-model.ts';

const TEXT = `The harbour master decides where each ship may anchor. Tides rise and fall twice a day, so deep ships wait
for high water. A lighthouse warns ships of rocks near the coast; its lamp turns all night and sailors count the
flashes to know which light they see. In winter the bay sometimes freezes and the ferry stays in port for weeks.`;

/**
 * kdn serve with KDN_CODEC=transform:x8: the first start fits the model's table and stores it at the origin; chunk
 * objects name it, hold keys before RoPE and decode, with the table read back from the origin, close to the KV the
 * engine computes for the same tokens.
 */
describe('kdn ingest with the transform codec', function () {
  this.timeout(300_000);
  let model: TestModel;
  let dir: string;
  let server: Started | undefined;

  before(async () => {
    // The tiny model: fitting on the shipped model takes over a minute of CPU, past a server's start-up timeout here.
    model = await testModel({ preferShipped: false });
    dir = await mkdtemp(join(tmpdir(), 'kdn-transform-'));
  });

  after(async () => {
    await server?.stop();
    await model?.cleanup();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it("fits and stores the table once, encodes chunks with it, and the objects decode to the engine's KV", async () => {
    const serve = (): Promise<Started> =>
      startKdnServe({ model: model.dir, dataDir: join(dir, 'data'), chunkTokens: 32, codec: 'transform:x8' });
    server = await serve();
    const file = join(dir, 'harbour.txt');
    await writeFile(file, TEXT);
    const [job] = await cliJson<JobView[]>(['upload', file], { KDN_SERVER: server.ready.url });
    expect(job!.status).to.equal('done');
    await server.stop();
    // A restart finds the stored table instead of fitting another.
    server = await serve();
    await server.stop();
    server = undefined;

    const origin = openStore(`file:${join(dir, 'data', 'origin')}`);
    try {
      const tableKeys: string[] = [];
      for await (const info of origin.list(TRANSFORM_TABLE_PREFIX)) tableKeys.push(info.key);
      expect(tableKeys).to.have.length(1);
      transformTables.clear();
      const table = transformTables.register(parseTransformTable(await origin.get(tableKeys[0]!)));
      expect(tableKeys[0]).to.equal(transformTableKey(table.modelFingerprint, table.hash));

      const manifestKeys: string[] = [];
      for await (const info of origin.list('manifests/')) manifestKeys.push(info.key);
      const manifest = JSON.parse((await origin.get(manifestKeys[0]!)).toString('utf8')) as Manifest;
      expect(manifest.codec).to.equal('transform:x8');
      expect(manifest.chunks.length).to.be.greaterThan(1);

      const engine = await createEngine({ modelDir: model.dir, backend: 'cpu' });
      try {
        const config = await loadModelConfig(model.dir);
        const chunk = manifest.chunks[0]!;
        const { header, tensors } = decodeKVObject(await origin.get(chunk.independent.key));
        expect(header.codec).to.deep.equal({ name: 'transform', lz4: false, table: table.hash, level: 2 });
        expect(header.ropeApplied).to.equal(false);
        expect(header.modelFingerprint).to.equal(table.modelFingerprint);
        const session = engine.createSession({ capacity: chunk.tokenIds.length + 1 });
        await session.prefill([engine.tokenizer.bosTokenId!, ...chunk.tokenIds], { logits: 'none' });
        const want = kvBeforeRope(await session.exportKV({ start: 1, end: session.length }), config);
        session.dispose();
        let err = 0;
        let norm = 0;
        want.perLayer.forEach((layer, l) => {
          for (const kind of ['keys', 'values'] as const) {
            for (let i = 0; i < layer[kind].length; i++) {
              err += (layer[kind][i]! - tensors.perLayer[l]![kind][i]!) ** 2;
              norm += layer[kind][i]! ** 2;
            }
          }
        });
        console.log(
          `      ${model.kind} model: x8 object ${chunk.independent.bytes} bytes, relative squared error ${(err / norm).toFixed(4)}`,
        );
        // x8 spends 2 bits per element: far from exact, far better than nothing (relative error 1).
        expect(err / norm).to.be.below(0.2);
      } finally {
        await engine.dispose();
      }
    } finally {
      await origin.close();
    }
  });
});
