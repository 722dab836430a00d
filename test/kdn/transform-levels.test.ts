/**
 * kdn serve with extra codec levels (--codec-levels): ingest stores every level's objects of each chunk beside the
 * main codec's (skipping those the origin has) and the manifest lists them; a query with a tight TTFT target is
 * answered from the smallest level, a generous one from the main codec, and bad values are refused.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import type { QueryResponse } from '../../kdn/client/api-client.ts';
import type { JobView } from '../../kdn/ingest/jobs.ts';
import { ManifestSchema, manifestObjects, type Manifest } from '../../kdn/manifest.ts';
import { readKVHeader, verifyKVObject } from '../../storage/kv-object/index.ts';
import { openStore } from '../../storage/open-store.ts';
import { cliJson, runCli, type ServeOptions, serveArgs, startKdnServe, TEST_API_KEY, type Started } from '../../fixtures/processes.ts';
import { testModel, type TestModel } from './support/tiny-model.ts';

const PARAGRAPH = `The harbour master decides where each ship may anchor. Tides rise and fall twice a day, so deep ships wait
for high water. A lighthouse warns ships of rocks near the coast; its lamp turns all night and sailors count the
flashes to know which light they see. In winter the bay sometimes freezes and the ferry stays in port for weeks.`;
/**
 * Long enough that even the x4 level's objects (about 80 KB on the tiny model) would take over 1 ms at the
 * estimate a server starts with (50 MB/s), so a 1 ms target leaves only the smallest level.
 */
const TEXT = [1, 2, 3, 4].map((part) => `Part ${part}. ${PARAGRAPH}`).join('\n\n');

const LEVELS = ['transform:x4', 'transform:x16'];

describe('kdn with several codec levels per chunk', function () {
  this.timeout(300_000);
  let model: TestModel;
  let dir: string;
  let server: Started | undefined;

  const serveOptions = (args: string[]): ServeOptions => ({
    model: model.dir,
    dataDir: join(dir, 'data'),
    chunkTokens: 32,
    codec: 'int8',
    args,
  });
  const upload = async (title: string): Promise<JobView> => {
    const [job] = await cliJson<JobView[]>(['upload', join(dir, 'harbour.txt'), '--title', title], { KDN_SERVER: server!.ready.url });
    expect(job!.status, JSON.stringify(job)).to.equal('done');
    return job!;
  };
  const query = (title: string, extra: string[] = []): Promise<QueryResponse> =>
    cliJson<QueryResponse>(['query', 'What does a lighthouse do?', '--doc', title, '--max-tokens', '8', ...extra], {
      KDN_SERVER: server!.ready.url,
    });
  const manifestOf = async (title: string): Promise<Manifest> => {
    const origin = openStore(`file:${join(dir, 'data', 'origin')}`);
    try {
      for await (const info of origin.list('manifests/')) {
        const manifest = ManifestSchema.parse(JSON.parse((await origin.get(info.key)).toString('utf8')));
        if (manifest.title === title) return manifest;
      }
      throw new Error(`no manifest titled ${title}`);
    } finally {
      await origin.close();
    }
  };

  before(async () => {
    // The tiny model: fitting a table on the shipped model takes over a minute of CPU.
    model = await testModel({ preferShipped: false });
    dir = await mkdtemp(join(tmpdir(), 'kdn-levels-'));
    await writeFile(join(dir, 'harbour.txt'), TEXT);
  });
  afterEach(async () => {
    await server?.stop();
    server = undefined;
  });
  after(async () => {
    await model?.cleanup();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('stores every level of each chunk beside the main codec, skipping what the origin has, and lists them', async () => {
    server = await startKdnServe(serveOptions([]));
    const plain = await upload('plain');
    const mainObjects = plain.progress.objects.total;
    expect((await manifestOf('plain')).chunks.every((c) => c.levels === undefined)).to.equal(true);
    await server.stop();

    server = await startKdnServe(serveOptions(['--codec-levels', LEVELS.join(',')]));
    // The same text under another title: the same chunk keys, so the main codec's objects are found, the levels' computed.
    const first = await upload('levels');
    expect(first.progress.objects.total).to.equal(3 * mainObjects);
    expect(first.progress.objects.skipped).to.equal(mainObjects);
    expect(first.progress.objects.computed).to.equal(2 * mainObjects);
    const again = await upload('levels again');
    expect(again.progress.objects.skipped).to.equal(3 * mainObjects);
    expect(again.progress.objects.computed).to.equal(0);

    // A manifest written before levels existed still loads, and keeps answering from its main codec.
    const old = await query('plain', ['--ttft-target', '1']);
    expect(old.chunks.every((c) => c.codec === 'int8')).to.equal(true);
    expect(old.level).to.equal(null);

    const manifest = await manifestOf('levels');
    const origin = openStore(`file:${join(dir, 'data', 'origin')}`);
    try {
      for (const chunk of manifest.chunks) {
        expect(chunk.levels!.map((l) => l.codec)).to.deep.equal(LEVELS);
        for (const level of chunk.levels!) {
          expect(level.independent.key).to.not.equal(chunk.independent.key);
          expect(level.chained === null).to.equal(chunk.chained === null);
          for (const ref of [level.independent, ...(level.chained ? [level.chained] : [])]) {
            const object = await origin.get(ref.key);
            expect(object.length).to.equal(ref.bytes);
            const header = readKVHeader(object);
            expect(`transform:x${[4, 6, 8, 12, 16, 20][header.codec.level!]}`).to.equal(level.codec);
          }
        }
        // Smaller levels make smaller objects.
        expect(chunk.levels![1]!.independent.bytes).to.be.below(chunk.levels![0]!.independent.bytes);
        expect(chunk.levels![0]!.independent.bytes).to.be.below(chunk.independent.bytes);
      }
      const res = await fetch(`${server.ready.url}/v1/documents/${manifest.id}`, { headers: { authorization: `Bearer ${TEST_API_KEY}` } });
      const described = (await res.json()) as { chunks: { levels: { codec: string; independent: { key: string } }[] }[] };
      expect(described.chunks[0]!.levels.map((l) => l.codec)).to.deep.equal(LEVELS);
      expect(described.chunks[0]!.levels[1]!.independent.key).to.equal(manifest.chunks[0]!.levels![1]!.independent.key);
      expect(manifestObjects(manifest)).to.have.length(3 * mainObjects);
      expect(manifest.bytes).to.equal(manifestObjects(manifest).reduce((n, o) => n + o.bytes, 0));
    } finally {
      await origin.close();
    }
  });

  it('answers from the smallest level under a tight TTFT target and from the main codec under a generous one', async () => {
    server = await startKdnServe(serveOptions(['--codec-levels', LEVELS.join(',')]));
    await upload('levels');
    // The first query of a fresh server, so the delivery estimate is still the one it starts with.
    const tight = await query('levels', ['--ttft-target', '1']);
    console.log(`      tight: ${tight.chunks.length} chunks, level ${JSON.stringify(tight.level)}`);
    expect(tight.level!.codec).to.equal('transform:x16');
    expect(tight.chunks.length).to.be.greaterThan(1);
    expect(tight.chunks.every((c) => c.codec === 'transform:x16' && c.tier !== 'computed')).to.equal(true);
    expect(tight.tokens.reused).to.equal(tight.tokens.context);

    // The OpenAI route takes the target in its kdn field (the estimate is unchanged: fetches under 64 KiB are not measured).
    const res = await fetch(`${server.ready.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${TEST_API_KEY}` },
      body: JSON.stringify({
        messages: [{ role: 'user', content: 'What does a lighthouse do?' }],
        max_tokens: 4,
        kdn: { documents: ['levels'], ttftTargetMs: 1 },
      }),
    });
    expect(res.status).to.equal(200);
    const chat = (await res.json()) as { kdn: Pick<QueryResponse, 'chunks' | 'level'> };
    expect(chat.kdn.level!.codec).to.equal('transform:x16');
    expect(chat.kdn.chunks.every((c) => c.codec === 'transform:x16')).to.equal(true);

    const generous = await query('levels', ['--ttft-target', '600000']);
    expect(generous.level!.codec).to.equal('int8');
    expect(generous.chunks.every((c) => c.codec === 'int8' && c.tier !== 'computed')).to.equal(true);
    // Both came from injected chunks and answered; lossy levels need not give the same text.
    expect(generous.tokens.generated).to.be.greaterThan(0);
    expect(tight.tokens.generated).to.be.greaterThan(0);

    const untargeted = await query('levels');
    expect(untargeted.level).to.equal(null);
    expect(untargeted.chunks.every((c) => c.codec === 'int8')).to.equal(true);
  });

  it('computes a chunk whose level object is missing or corrupt, and repairs the corrupt one at its level', async () => {
    // A fresh edge disk, so no tier holds copies of the objects from the queries before.
    server = await startKdnServe(serveOptions(['--codec-levels', LEVELS.join(','), '--edge-disk-path', join(dir, 'fresh-edge')]));
    await upload('levels');
    const manifest = await manifestOf('levels');
    const [missing, corrupt] = [1, 2].map((i) => manifest.chunks[i]!.levels![1]!.chained!.key);
    const origin = openStore(`file:${join(dir, 'data', 'origin')}`);
    try {
      await origin.delete(missing!);
      const bytes = Buffer.from(await origin.get(corrupt!));
      bytes[bytes.length - 1] ^= 0xff;
      await origin.put(corrupt!, bytes, { contentLength: bytes.length });

      const answered = await query('levels', ['--ttft-target', '1']);
      const tiers = answered.chunks.map((c) => c.tier);
      expect(answered.level!.codec).to.equal('transform:x16');
      expect(tiers[1]).to.equal('computed');
      expect(tiers[2]).to.equal('computed');
      expect(tiers.filter((t) => t === 'computed')).to.have.length(2);
      expect(answered.tokens.generated).to.be.greaterThan(0);

      // The repair runs after the query: the origin's copy is computed again, at the level it was stored at.
      let header: ReturnType<typeof verifyKVObject> | undefined;
      for (let tries = 0; !header && tries < 100; tries++) {
        try {
          header = verifyKVObject(await origin.get(corrupt!));
        } catch {
          await new Promise((resolve) => setTimeout(resolve, 200));
        }
      }
      expect(header?.codec.level).to.equal(4);
    } finally {
      await origin.close();
    }
  });

  it('refuses bad TTFT targets and codec levels with clear errors', async () => {
    server = await startKdnServe(serveOptions(['--codec-levels', LEVELS.join(',')]));
    for (const body of [{ ttftTargetMs: 0 }, { ttftTargetMs: 2.5 }, { ttftTargetMs: 'fast' }]) {
      const res = await fetch(`${server.ready.url}/v1/query`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${TEST_API_KEY}` },
        body: JSON.stringify({ question: 'What does a lighthouse do?', ...body }),
      });
      expect(res.status, JSON.stringify(body)).to.equal(400);
      const { error } = (await res.json()) as { error: { code: string; message: string; hint?: string } };
      expect(error.code).to.equal('INVALID_ARGUMENT');
      expect(error.message).to.match(/ttftTargetMs/);
      expect(error.hint).to.match(/time to first token/);
    }
    const cli = await runCli(['query', 'What?', '--ttft-target', '-5'], { KDN_SERVER: server.ready.url });
    expect(cli.code).to.equal(2);
    expect(cli.stderr).to.match(/--ttft-target must be a whole number from 1 to 600000, got "-5"/);
    await server.stop();

    for (const [args, message] of [
      [['--codec-levels', 'transform:x5'], /"transform:x5" is not a codec/],
      [['--codec-levels', 'int8'], /codecLevels names the main codec int8/],
      [['--codec-levels', 'int4,int4'], /name one codec twice/],
      [['--ttft-target', 'soon'], /--ttft-target: .*expected number/],
    ] as const) {
      const serve = await runCli([...serveArgs(serveOptions([...args])), '--json']);
      expect(serve.code, args.join(' ')).to.not.equal(0);
      expect(serve.stderr).to.match(message);
    }
  });
});
