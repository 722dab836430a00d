import { expect } from 'chai';
import { readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { KdnApiClient, QueryResponse } from '../../kdn/client/api-client.ts';
import { testModel, type TestModel } from '../kdn/support/tiny-model.ts';
import { corpusText } from './support/corpus.ts';
import { edgeDiskFile, flipBytes, originFile } from './support/corrupt.ts';
import { recordFigures } from './support/figures.ts';
import { ingest, kdnClient, manifestOf } from './support/kdn-api.ts';
import { Rng } from './support/rng.ts';
import { collectStderr, logLines, startKdn, tempDir, type Started } from './support/stack.ts';

const SEED = 8101;
const FLIPS_PER_OBJECT = 3;

/**
 * Corruption: bytes flipped in stored KV objects, half at the origin (and gone from the edge, so the edge must
 * fetch the bad copy), half in the edge's disk tier (the origin copy is good). No corrupt object may reach the
 * engine: origin-corrupt chunks are computed (the edge answers KV_CORRUPT), edge-corrupt ones are refetched (the edge
 * drops its bad copy and serves the origin's).
 */
describe('fault: corrupted KV objects', function () {
  this.timeout(120_000);
  let model: TestModel;
  let tmp: { dir: string; cleanup: () => Promise<void> };
  let kdn: Started;
  let api: KdnApiClient;

  before(async () => {
    model = await testModel({ preferShipped: false });
    tmp = await tempDir('kdn-fault-corrupt-');
    // No memory tier on the embedded edge: every read goes to its disk tier, where the flipped files are.
    kdn = await startKdn({
      model: model.dir,
      dataDir: join(tmp.dir, 'data'),
      codec: 'fp16',
      chunkTokens: 16,
      args: ['--edge-disk-path', join(tmp.dir, 'edge'), '--edge-memory', '0'],
    });
    api = kdnClient(kdn.ready.url);
  });

  after(async () => {
    await kdn?.stop();
    await model?.cleanup();
    await tmp?.cleanup();
  });

  it('detects every corrupted object, injects none, and still answers', async () => {
    const job = await ingest(api, 'river', corpusText(14));
    const ask = (): Promise<QueryResponse> => api.query({ question: 'What does the miller watch?', documents: ['river'], maxTokens: 12 });
    const baseline = await ask();
    expect(baseline.chunks.length).to.be.at.least(10);
    expect(baseline.chunks.every((c) => c.tier === 'disk')).to.equal(true);

    const manifest = await manifestOf(api, job.document.id);
    const keyOf = (c: QueryResponse['chunks'][number]): string => {
      const chunk = manifest.chunks[c.index]!;
      return c.kind === 'chained' ? chunk.chained!.key : chunk.independent.key;
    };
    const rng = new Rng(SEED);
    const atOrigin = new Set<string>();
    const atEdge = new Set<string>();
    for (const [i, chunk] of baseline.chunks.entries()) {
      const key = keyOf(chunk);
      if (i % 2 === 0) {
        await flipBytes(originFile(join(tmp.dir, 'data', 'origin'), key), FLIPS_PER_OBJECT, rng);
        await rm(edgeDiskFile(join(tmp.dir, 'edge'), key));
        atOrigin.add(key);
      } else {
        await flipBytes(edgeDiskFile(join(tmp.dir, 'edge'), key), FLIPS_PER_OBJECT, rng);
        atEdge.add(key);
      }
    }

    const log = collectStderr(kdn);
    const answer = await ask();
    // kdn logs each unusable object with the edge's error code; an origin-corrupt object answers KV_CORRUPT. The
    // log reaches the pipe when kdn's event loop gets to it, which the repairs kdn starts after the query can delay.
    const corruptKeys = (): Set<string> =>
      new Set(
        logLines(log())
          .filter((line) => (line.err as { code?: string } | undefined)?.code === 'KV_CORRUPT')
          .map((line) => String(line.key)),
      );
    for (let waited = 0; waited < 10_000 && [...atOrigin].some((key) => !corruptKeys().has(key)); waited += 100) {
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    const reportedCorrupt = corruptKeys();

    const repaired = async (key: string): Promise<boolean> => {
      const good = await readFile(originFile(join(tmp.dir, 'data', 'origin'), key));
      const held = await readFile(edgeDiskFile(join(tmp.dir, 'edge'), key)).catch(() => undefined);
      return held !== undefined && Buffer.compare(held, good) === 0;
    };
    let injected = 0;
    let detected = 0;
    for (const chunk of answer.chunks) {
      const key = keyOf(chunk);
      if (atOrigin.has(key)) {
        // The origin holds only the bad copy: any tier but 'computed' means it was injected.
        if (chunk.tier !== 'computed') injected++;
        else if (reportedCorrupt.has(key)) detected++;
      } else if (atEdge.has(key)) {
        // The edge's disk copy is bad: 'origin' means the edge dropped it and refetched. Served from the edge's tiers,
        // the copy is the bad one unless the edge replaced it meanwhile (a first attempt the query gave up on
        // repaired it: the file now holds the origin's good bytes).
        const fromEdge = chunk.tier === 'disk' || chunk.tier === 'memory' || chunk.tier === 'shm';
        if (fromEdge && !(await repaired(key))) injected++;
        else if (fromEdge || chunk.tier === 'origin') detected++;
      }
    }
    const corrupted = atOrigin.size + atEdge.size;
    recordFigures('corruption', {
      objectsCorrupted: corrupted,
      atOrigin: atOrigin.size,
      atEdgeDisk: atEdge.size,
      detected,
      injected,
      computed: answer.chunks.filter((c) => c.tier === 'computed').length,
      refetched: answer.chunks.filter((c) => c.tier === 'origin').length,
      answered: answer.answer === baseline.answer,
    });
    expect(corrupted).to.be.at.least(10);
    expect(injected).to.equal(0);
    expect(detected).to.equal(corrupted);
    expect(answer.chunks.map((c) => c.index)).to.deep.equal(baseline.chunks.map((c) => c.index));
    // fp16 objects reproduce the computed KV, so an answer built from refetched and recomputed chunks is the same.
    expect(answer.answer).to.equal(baseline.answer);

    // The repaired edge now serves the refetched objects from disk. The origin-corrupt ones are being rewritten at
    // the origin behind the queries (test/security/repair.test.ts), so they are computed or served depending on timing.
    const again = await ask();
    for (const chunk of again.chunks) if (!atOrigin.has(keyOf(chunk))) expect(chunk.tier).to.equal('disk');
  });
});
