import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import { KdnApiClient, type QueryResponse, type WarmPlan } from '../../kdn/client/api-client.ts';
import type { JobView } from '../../kdn/ingest/jobs.ts';
import type { DocumentSummary, Manifest } from '../../kdn/manifest.ts';
import { openStore } from '../../storage/open-store.ts';
import { TEST_API_KEY, cliJson, runCli, startKdnServe, type Started } from '../../fixtures/processes.ts';
import { testModel, type TestModel } from './support/tiny-model.ts';

const CATS = `# Cats

Cats are small carnivorous mammals. They have lived with humans for thousands of years.

The domestic cat sleeps for most of the day. Cats hunt mice and birds at night. A cat purrs when it is content.

Lions are big cats that live in Africa. They hunt in groups called prides.
`;

const SHIPS = `Ships and the sea.

A lighthouse warns ships of rocks near the coast. Its lamp turns all night. Sailors count the flashes to know which light they see.

The harbour master decides where each ship may anchor. Tides rise and fall twice a day, so deep ships wait for high water.
`;

/**
 * As a new user would: `kdn serve` on a fresh data directory, upload two documents with the CLI, query with inject
 * and recompute, warm a cold edge. fp16 for the exactness check, then int8 for comparison.
 */
describe('kdn end to end (kdn serve + CLI)', function () {
  this.timeout(120_000);
  let model: TestModel;
  let dir: string;
  let server: Started | undefined;
  let env: NodeJS.ProcessEnv;
  const files: string[] = [];

  const serve = async (codec: string, args: string[]): Promise<void> => {
    server = await startKdnServe({ model: model.dir, dataDir: join(dir, 'data'), chunkTokens: 64, codec, args });
    env = { KDN_SERVER: server.ready.url };
  };
  const query = (question: string, args: string[]): Promise<QueryResponse> => cliJson<QueryResponse>(['query', question, ...args], env);

  before(async () => {
    model = await testModel();
    dir = await mkdtemp(join(tmpdir(), 'kdn-e2e-'));
    for (const [name, text] of [
      ['cats.md', CATS],
      ['ships.txt', SHIPS],
    ] as const) {
      await writeFile(join(dir, name), text);
      files.push(join(dir, name));
    }
    console.log(`      model: ${model.kind} (${model.dir})`);
  });

  after(async () => {
    await server?.stop();
    await model?.cleanup();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('serves on a fresh data directory and uploads two documents with the CLI', async () => {
    await serve('fp16', ['--max-upload', '32KiB']);
    expect(server!.ready.url).to.match(/^http:\/\/127\.0\.0\.1:\d+$/);
    const jobs = await cliJson<JobView[]>(['upload', ...files], env);
    expect(jobs.map((j) => j.status)).to.deep.equal(['done', 'done']);
    expect(jobs.map((j) => j.document.title)).to.deep.equal(['cats.md', 'ships.txt']);
    for (const job of jobs) {
      expect(job.progress.chunks).to.be.greaterThan(1);
      expect(job.progress.objects.computed).to.equal(job.progress.objects.total);
    }
    const list = await cliJson<{ documents: DocumentSummary[] }>(['docs', 'list'], env);
    expect(list.documents.map((d) => d.title).sort()).to.deep.equal(['cats.md', 'ships.txt']);
    expect(list.documents.every((d) => d.codec === 'fp16')).to.equal(true);
  });

  it('gives identical greedy answers with inject and recompute for prefix-chained knowledge (fp16)', async () => {
    for (const [doc, question] of [
      ['cats.md', 'What do cats hunt at night?'],
      ['ships.txt', 'What does a lighthouse do?'],
    ] as const) {
      const injected = await query(question, ['--doc', doc, '--max-tokens', '24']);
      const recomputed = await query(question, ['--doc', doc, '--max-tokens', '24', '--mode', 'recompute']);
      console.log(`      fp16 ${doc}: inject ${JSON.stringify(injected.answer)} | recompute ${JSON.stringify(recomputed.answer)}`);
      expect(injected.answer).to.equal(recomputed.answer);
      expect(injected.chunks.every((c) => c.kind === 'chained' && c.tier !== 'computed')).to.equal(true);
      expect(injected.tokens.reused).to.equal(injected.tokens.context);
      expect(recomputed.tokens.reused).to.equal(0);
      expect(recomputed.tokens.computed).to.equal(1 + recomputed.tokens.context + recomputed.tokens.prompt);
      expect(injected.bytes).to.be.greaterThan(0);
      console.log(
        `      ${doc}: context ${injected.tokens.context} tokens, ${injected.bytes} bytes; ttft inject ${injected.timings.ttft.toFixed(1)} ms vs recompute ${recomputed.timings.ttft.toFixed(1)} ms`,
      );
    }
  });

  it('serves a second query from edge memory, and retrieves chunks by BM25 without --doc', async () => {
    const second = await query('What do cats hunt at night?', ['--doc', 'cats.md']);
    // The embedded edge mirrors its memory tier under /dev/shm where there is one, and kdn reads it from there.
    const fromMemory = existsSync('/dev/shm') ? 'shm' : 'memory';
    expect(second.chunks.map((c) => c.tier)).to.satisfy((tiers: string[]) => tiers.every((t) => t === fromMemory));
    const retrieved = await query('lighthouse lamp flashes', ['--top-k', '2']);
    expect(retrieved.chunks).to.have.length.within(1, 2);
    expect(retrieved.chunks[0]!.title).to.equal('ships.txt');
    expect(retrieved.chunks.every((c) => typeof c.score === 'number')).to.equal(true);
    expectRetrievalPlan(retrieved.chunks);
    expect(retrieved.timings).to.include.keys('retrieval', 'fetch', 'injection', 'prefill', 'ttft', 'total');
  });

  it('blends retrieved chunks: recomputes the share asked for and says so; every token recomputed answers as recompute; a bad ratio is a 400 with a hint', async () => {
    const question = 'cats lighthouse ships prides';
    const blended = await query(question, ['--top-k', '4', '--mode', 'blend', '--blend-ratio', '0.25', '--max-tokens', '16']);
    expect(blended.mode).to.equal('blend');
    expect(blended.blend).to.deep.include({ ratio: 0.25, selection: 'attended', fullLayers: 1 });
    // Averaged over the layers after the check layer, each of whose shares is rounded on its own.
    expect(blended.blend!.recomputedTokens).to.be.closeTo(0.25 * blended.tokens.context, 1);
    expect(blended.blend!.ms).to.be.greaterThan(0);
    expect(blended.tokens.reused).to.equal(blended.tokens.context);
    const whole = await query(question, ['--top-k', '4', '--mode', 'blend', '--blend-ratio', '1', '--max-tokens', '16']);
    const recomputed = await query(question, ['--top-k', '4', '--mode', 'recompute', '--max-tokens', '16']);
    expect(whole.blend!.recomputedTokens).to.equal(whole.tokens.context);
    expect(whole.answer).to.equal(recomputed.answer);
    const injected = await query(question, ['--top-k', '4', '--max-tokens', '16']);
    expect(injected.blend).to.equal(null);
    console.log(
      `      blend 0.25 ${JSON.stringify(blended.answer)} | blend 1 ${JSON.stringify(whole.answer)} | inject ${JSON.stringify(injected.answer)} | recompute ${JSON.stringify(recomputed.answer)}`,
    );

    const url = server!.ready.url;
    for (const [path, body] of [
      ['/v1/query', { question, mode: 'blend', blendRatio: 1.5 }],
      ['/v1/chat/completions', { messages: [{ role: 'user', content: question }], kdn: { mode: 'blend', blendRatio: -0.1 } }],
    ] as const) {
      const res = await fetch(`${url}${path}`, post(body));
      const err = (await res.json()) as { error: { code: string; message: string; hint?: string } };
      expect(res.status, path).to.equal(400);
      expect(err.error.hint, path).to.match(/blendRatio is the share of context tokens/);
    }
    const cli = await runCli(['query', question, '--mode', 'blend', '--blend-ratio', '3'], env);
    expect(cli.code).to.not.equal(0);
    expect(cli.stderr).to.match(/--blend-ratio must be from 0 to 1/);
  });

  it('answers a named document longer than the model window from its most relevant chunks, blended, and says so', async () => {
    const long = join(dir, 'harbour-log.txt');
    const days = Array.from(
      { length: 80 },
      (_, i) => `Day ${i + 1}. The harbour master logged ${i + 3} ships at anchor and the lamp turned all night.`,
    );
    days[41] = 'Day 42. A green whale swam past the lighthouse at noon, and the sailors named it Bartholomew.';
    await writeFile(long, days.join('\n'));
    await cliJson<JobView[]>(['upload', '--namespace', 'long', long], env);
    const answer = await query('What did the sailors name the green whale?', [
      '--namespace',
      'long',
      '--doc',
      'harbour-log.txt',
      '--max-tokens',
      '8',
    ]);
    expect(answer.mode).to.equal('blend');
    expect(answer.note).to.match(
      /^the named documents hold \d+ tokens, more than fit the model's \d+-token window .* most relevant chunks .*, blended$/,
    );
    expect(answer.blend).to.not.equal(null);
    const window = (JSON.parse(await readFile(join(model.dir, 'config.json'), 'utf8')) as { max_position_embeddings: number })
      .max_position_embeddings;
    expect(1 + answer.tokens.context + answer.tokens.prompt + 8).to.be.at.most(window);
    // Retrieval was restricted to the named document, the chunk that matches first, the rest of the window filled.
    const titles = new Set(answer.chunks.map((c) => c.title));
    expect([...titles]).to.deep.equal(['harbour-log.txt']);
    expect(answer.chunks.length).to.be.greaterThan(1);
    expect(answer.chunks.filter((c) => c.score !== null && c.score > 0)).to.have.length.at.least(1);
    expect(1 + answer.tokens.context + answer.tokens.prompt + 8 + 64).to.be.greaterThan(window);
    console.log(`      long document: ${answer.note}; ${JSON.stringify(answer.answer)}`);
  });

  it('answers the OpenAI-compatible routes, takes multipart uploads, and rejects bad input with 4xx', async () => {
    const url = server!.ready.url;
    const models = (await (await fetch(`${url}/v1/models`, { headers: AUTH })).json()) as { data: { id: string }[] };
    expect(models.data).to.have.length(1);
    const body = {
      messages: [{ role: 'user', content: 'What do cats hunt?' }],
      max_tokens: 8,
      kdn: { namespace: 'default', documents: ['cats.md'] },
    };
    const plain = (await (await fetch(`${url}/v1/chat/completions`, post(body))).json()) as {
      choices: { message: { content: string } }[];
      usage: { completion_tokens: number };
    };
    expect(plain.choices[0]!.message.content).to.be.a('string');
    expect(plain.usage.completion_tokens).to.be.within(1, 8);
    const streamed = await (
      await fetch(
        `${url}/v1/completions`,
        post({ prompt: 'Cats hunt', max_tokens: 6, stream: true, stream_options: { include_usage: true }, kdn: { topK: 2 } }),
      )
    ).text();
    const events = streamed.split('\n\n').filter(Boolean);
    expect(events.at(-1)).to.equal('data: [DONE]');
    const usage = JSON.parse(events.at(-2)!.slice('data: '.length)) as { usage: { completion_tokens: number } };
    expect(usage.usage.completion_tokens).to.be.within(1, 6);
    const final = JSON.parse(events.at(-3)!.slice('data: '.length)) as { choices: { finish_reason: string }[] };
    expect(final.choices[0]!.finish_reason).to.be.oneOf(['stop', 'length']);

    for (const [path, bad, status] of [
      ['/v1/query', { question: '' }, 400],
      ['/v1/query', { question: 'x', namespace: '../etc' }, 400],
      ['/v1/query', { question: 'x', documents: ['no such doc'] }, 404],
      ['/v1/query', { question: 'x', maxTokens: 100_000 }, 400],
      ['/v1/documents', { title: 'x' }, 400],
      ['/v1/chat/completions', { messages: [] }, 400],
      // A stream that fails before its first token still answers with a status, not an SSE error event.
      ['/v1/chat/completions', { messages: [{ role: 'user', content: 'x' }], stream: true, kdn: { documents: ['no such doc'] } }, 404],
    ] as const) {
      const res = await fetch(`${url}${path}`, post(bad));
      const err = (await res.json()) as { error: { code: string; message: string } };
      expect(res.status, `${path} ${JSON.stringify(bad)}: ${err.error.message}`).to.equal(status);
    }
    const tooBig = 'x'.repeat(40 * 1024);
    expect((await fetch(`${url}/v1/documents`, post({ title: 'big', text: tooBig }))).status).to.equal(413);
    const bigForm = new FormData();
    bigForm.append('file', new Blob([tooBig]), 'big.txt');
    expect((await fetch(`${url}/v1/documents`, { method: 'POST', headers: AUTH, body: bigForm })).status).to.equal(413);
    const binary = new FormData();
    binary.append('file', new Blob([new Uint8Array([0xff, 0xfe, 0x00, 0x01])]), 'blob.bin');
    expect((await fetch(`${url}/v1/documents`, { method: 'POST', headers: AUTH, body: binary })).status).to.equal(415);

    const form = new FormData();
    form.append('namespace', 'forms');
    form.append('file', new Blob([CATS]), 'cats-form.md');
    const uploaded = await fetch(`${url}/v1/documents`, { method: 'POST', headers: AUTH, body: form });
    expect(uploaded.status).to.equal(202);
    const { job } = (await uploaded.json()) as { job: JobView };
    expect(job.document).to.deep.include({ namespace: 'forms', title: 'cats-form.md' });
    const finished = await new KdnApiClient(url, TEST_API_KEY).waitForJob(job.id);
    // Same text as cats.md: every chunk object is already stored (keys are content addresses).
    expect(finished.progress.objects.skipped).to.equal(finished.progress.objects.total);

    const notJson = await fetch(`${url}/v1/query`, { method: 'POST', headers: { 'content-type': 'application/json', ...AUTH }, body: '{' });
    expect(notJson.status).to.equal(400);
    const metrics = await (await fetch(`${url}/metrics`, { headers: AUTH })).text();
    expect(metrics).to.match(/^kdn_engine_queue_depth 0$/m);
    expect(metrics).to.match(/^kdn_query_tokens_total\{kind="reused"\} [1-9]\d*$/m);
    // Served from the embedded edge's memory tier: through its shared-memory mirror where /dev/shm exists.
    const tier = existsSync('/dev/shm') ? 'shm' : 'memory';
    expect(metrics).to.match(new RegExp(`^kdn_chunk_fetches_total\\{tier="${tier}"\\} [1-9]`, 'm'));
    expect(metrics).to.match(/^kdn_http_request_duration_seconds_count\{route="\/v1\/query"\} [1-9]/m);
    const failed = await runCli(['docs', 'show', 'missing'], env);
    expect(failed.code).to.equal(1);
    expect(failed.stderr).to.match(/NOT_FOUND/);
  });

  it('after a crash mid-ingest, a restarted kdn sees the knowledge, re-upload computes only what is missing, and kdn warm fills a cold edge', async () => {
    await server!.stop('SIGKILL');
    // What a crash before the manifest leaves: chunk objects but no manifest; and one chunk object never written.
    const origin = openStore(`file:${join(dir, 'data', 'origin')}`);
    const manifestKeys: string[] = [];
    for await (const info of origin.list('manifests/test/default/')) manifestKeys.push(info.key);
    const manifests = await Promise.all(
      manifestKeys.map(async (key) => ({ key, ...(JSON.parse((await origin.get(key)).toString('utf8')) as Manifest) })),
    );
    const ships = manifests.find((m) => m.title === 'ships.txt')!;
    expect(await origin.delete(ships.key)).to.equal(true);
    expect(await origin.delete(ships.chunks[1]!.independent.key)).to.equal(true);
    await origin.close();
    await serve('fp16', ['--edge-disk-path', join(dir, 'cold-edge')]);

    const list = await cliJson<{ documents: DocumentSummary[] }>(['docs', 'list'], env);
    expect(list.documents.map((d) => d.title)).to.deep.equal(['cats.md']);
    const [job] = await cliJson<JobView[]>(['upload', files[1]!], env);
    expect(job!.progress.objects.computed).to.equal(1);
    expect(job!.progress.objects.skipped).to.equal(job!.progress.objects.total - 1);

    type Shown = { chunks: { independent: { cached: { tier: string | null } } }[] };
    const tiersOf = async (title: string): Promise<(string | null)[]> =>
      (await cliJson<Shown>(['docs', 'show', title], env)).chunks.map((c) => c.independent.cached.tier);
    // The cold edge holds none of cats.md, and asking where it is cached must not fill the edge (warm then has work).
    expect(await tiersOf('cats.md')).to.satisfy((tiers: (string | null)[]) => tiers.every((t) => t === null));

    const plan = (await (await fetch(`${server!.ready.url}/v1/warm/plan`, post({}))).json()) as WarmPlan;
    const warm = await cliJson<{ warmed: number; present: number; failed: number; bytes: number }>(['warm'], env);
    console.log(`      warm: ${JSON.stringify(warm)}`);
    expect(warm.failed).to.equal(0);
    expect(warm.warmed + warm.present).to.equal(plan.objects.length);
    expect(warm.warmed).to.be.greaterThan(0);
    expect(await tiersOf('cats.md')).to.satisfy((tiers: (string | null)[]) => tiers.every((t) => t === 'memory' || t === 'disk'));
    for (const doc of ['cats.md', 'ships.txt']) {
      const answer = await query('What is it about?', ['--doc', doc]);
      expect(
        answer.chunks.map((c) => c.tier),
        doc,
      ).to.satisfy((tiers: string[]) => tiers.every((t) => ['memory', 'disk', 'shm'].includes(t)));
    }
    const retrieved = await query('cats lighthouse ships prides', ['--top-k', '6']);
    expect(retrieved.chunks.every((c) => ['memory', 'disk', 'shm'].includes(c.tier))).to.equal(true);
    expectRetrievalPlan(retrieved.chunks);
    console.log(`      retrieval plan: ${retrieved.chunks.map((c) => `${c.title}#${c.index}:${c.kind}`).join(' ')}`);
    // Both documents are small: their retrieved chunks start at chunk 0, so exact prefix-chained KV serves them.
    expect(retrieved.chunks.some((c) => c.kind === 'chained')).to.equal(true);

    const deleted = await cliJson<{ objects: { deleted: number } }>(['docs', 'delete', 'ships.txt'], env);
    expect(deleted.objects.deleted).to.be.greaterThan(0);
    const after = await cliJson<{ documents: DocumentSummary[] }>(['docs', 'list'], env);
    expect(after.documents.map((d) => d.title)).to.deep.equal(['cats.md']);
  });

  it('with int8 KV: inject and recompute answers (reported)', async () => {
    await server!.stop('SIGKILL');
    await serve('int8', ['--edge-disk-path', join(dir, 'int8-edge')]);
    await cliJson<JobView[]>(['upload', '--namespace', 'int8', ...files], env);
    let same = 0;
    const cases = [
      ['cats.md', 'What do cats hunt at night?'],
      ['ships.txt', 'What does a lighthouse do?'],
    ] as const;
    for (const [doc, question] of cases) {
      const injected = await query(question, ['--namespace', 'int8', '--doc', doc, '--max-tokens', '24']);
      const recomputed = await query(question, ['--namespace', 'int8', '--doc', doc, '--max-tokens', '24', '--mode', 'recompute']);
      expect(injected.tokens.reused).to.equal(injected.tokens.context);
      if (injected.answer === recomputed.answer) same++;
      console.log(
        `      int8 ${doc}: ${injected.bytes} bytes; inject ${JSON.stringify(injected.answer)} | recompute ${JSON.stringify(recomputed.answer)}`,
      );
    }
    console.log(`      int8: ${same}/${cases.length} greedy answers identical to recompute`);
  });
});

const AUTH = { authorization: `Bearer ${TEST_API_KEY}` };

function post(body: unknown): RequestInit {
  return { method: 'POST', headers: { 'content-type': 'application/json', ...AUTH }, body: JSON.stringify(body) };
}

/**
 * Retrieved chunks come grouped by document, in document order within each; a document's chunks that run from its
 * first chunk without a gap use prefix-chained objects, the others independent ones.
 */
function expectRetrievalPlan(chunks: { document: string; index: number; kind: string }[]): void {
  const seen: string[] = [];
  for (const [i, chunk] of chunks.entries()) {
    const previous = chunks[i - 1];
    if (previous?.document !== chunk.document) {
      expect(seen, `document ${chunk.document} appears in two groups`).not.to.include(chunk.document);
      seen.push(chunk.document);
    }
    const ofDocument = chunks.slice(0, i + 1).filter((c) => c.document === chunk.document);
    const position = ofDocument.length - 1;
    if (position > 0) expect(chunk.index).to.be.greaterThan(ofDocument[position - 1]!.index);
    const inPrefixRun = ofDocument.every((c, p) => c.index === p);
    expect(chunk.kind, `${chunk.document} #${chunk.index}`).to.equal(inPrefixRun ? 'chained' : 'independent');
  }
}
