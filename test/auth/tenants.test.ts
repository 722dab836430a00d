import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import type { UploadResponse, WarmPlan } from '../../kdn/client/api-client.ts';
import type { JobView } from '../../kdn/ingest/jobs.ts';
import type { DocumentSummary } from '../../kdn/manifest.ts';
import type { QueryOutcome } from '../../kdn/query/run-query.ts';
import { openStore } from '../../storage/open-store.ts';
import { cliJson, runCli, startKdnServe, type Started } from '../../fixtures/processes.ts';
import { testModel, type TestModel } from '../kdn/support/tiny-model.ts';

const ALICE = 'alice-key-0123456789abcdef';
const BOB = 'bob-key-0123456789abcdef01';

const SAME_TEXT = 'The lighthouse keeper climbs the tower at dusk. He lights the lamp and watches the ships pass the rocks. '.repeat(3);
const ALICE_ONLY = 'Alice keeps her plans for the orchard here: apples on the north slope, pears by the river gate. '.repeat(2);
const SHARED_TEXT = 'Every visitor must sign the guest book at the front desk before entering the archive rooms. '.repeat(2);

interface Answer {
  status: number;
  headers: Headers;
  body: Record<string, unknown> & { error?: { code: string; message: string; hint?: string; kdn_code?: string } };
}

/** One kdn REST call with `key` as the bearer token (none when undefined). */
async function call(url: string, key: string | undefined, method: string, path: string, body?: unknown): Promise<Answer> {
  const res = await fetch(`${url}${path}`, {
    method,
    headers: { ...(key ? { authorization: `Bearer ${key}` } : {}), ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  const text = await res.text();
  let parsed: Answer['body'] = {};
  try {
    parsed = JSON.parse(text) as Answer['body'];
  } catch {
    parsed = { text };
  }
  return { status: res.status, headers: res.headers, body: parsed };
}

/** Uploads and waits for the ingest job as `key`. */
async function upload(
  url: string,
  key: string,
  doc: { title: string; text: string; namespace: string },
): Promise<{ id: string; job: JobView }> {
  const answer = await call(url, key, 'POST', '/v1/documents', doc);
  expect(answer.status, JSON.stringify(answer.body)).to.equal(202);
  const { job, document } = answer.body as unknown as UploadResponse;
  for (;;) {
    const polled = await call(url, key, 'GET', `/v1/jobs/${job.id}`);
    const view = polled.body as unknown as JobView;
    if (view.status === 'done') return { id: document.id, job: view };
    if (view.status === 'failed') throw new Error(`ingest failed: ${JSON.stringify(view.error)}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

interface DocumentDetail {
  id: string;
  namespace: string;
  chunks: { independent: { key: string }; chained: { key: string } | null }[];
}

function objectKeys(doc: DocumentDetail): string[] {
  return doc.chunks.flatMap((c) => [c.independent.key, ...(c.chained ? [c.chained.key] : [])]);
}

/** Two tenants (and a shared namespace) on one `kdn serve` with its embedded edge. */
describe('tenants and API keys', function () {
  this.timeout(60_000);
  let model: TestModel;
  let dir: string;
  let kdn: Started;
  let url: string;

  before(async () => {
    model = await testModel({ preferShipped: false });
    dir = await mkdtemp(join(tmpdir(), 'kdn-auth-'));
    kdn = await startKdnServe({
      model: model.dir,
      dataDir: join(dir, 'data'),
      chunkTokens: 16,
      codec: 'int8',
      env: { KDN_API_KEYS: `${ALICE}=alice,${BOB}=bob`, KDN_SHARED_NAMESPACES: 'handbook=alice', KDN_RATE_LIMIT: '0' },
    });
    url = kdn.ready.url;
  });

  after(async () => {
    await kdn?.stop();
    await model?.cleanup();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('answers 401 UNAUTHENTICATED with a hint without a valid key; /healthz stays open, /metrics does not', async () => {
    for (const key of [undefined, 'wrong-key-0123456789abcdef', '']) {
      const answer = await call(url, key, 'GET', '/v1/documents');
      expect(answer.status, String(key)).to.equal(401);
      expect(answer.body.error?.code).to.equal('UNAUTHENTICATED');
      expect(answer.body.error?.hint).to.match(/Authorization: Bearer/);
      expect(answer.body).to.not.have.property('documents');
    }
    const basic = await fetch(`${url}/v1/status`, { headers: { authorization: `Basic ${Buffer.from(`x:${ALICE}`).toString('base64')}` } });
    expect(basic.status).to.equal(401);
    expect((await call(url, undefined, 'POST', '/v1/query', { question: 'x' })).status).to.equal(401);
    expect((await call(url, undefined, 'GET', '/healthz')).status).to.equal(200);
    expect((await call(url, undefined, 'GET', '/metrics')).status).to.equal(401);
    // Server-wide figures are for operators; a tenant sees its own usage.
    const metrics = await fetch(`${url}/metrics`, { headers: { authorization: `Bearer ${ALICE}` } });
    expect(metrics.status).to.equal(403);
    expect(await metrics.text()).to.not.match(/kdn_http_requests_total/);
  });

  it('keeps the same text uploaded by two tenants in separate objects, ids and manifests', async () => {
    const a = await upload(url, ALICE, { title: 'lighthouse', text: SAME_TEXT, namespace: 'docs' });
    const b = await upload(url, BOB, { title: 'lighthouse', text: SAME_TEXT, namespace: 'docs' });
    expect(a.id).to.not.equal(b.id);
    // Bob's ingest found none of Alice's objects: with one salt for both, every object would have been skipped.
    expect(b.job.progress.objects.computed).to.equal(b.job.progress.objects.total);
    expect(b.job.progress.objects.skipped).to.equal(0);
    expect(b.job.document.namespace).to.equal('docs');

    const docA = (await call(url, ALICE, 'GET', `/v1/documents/${a.id}?namespace=docs`)).body as unknown as DocumentDetail;
    const docB = (await call(url, BOB, 'GET', `/v1/documents/${b.id}?namespace=docs`)).body as unknown as DocumentDetail;
    expect(docA.namespace).to.equal('docs');
    const keysA = objectKeys(docA);
    const keysB = objectKeys(docB);
    expect(keysA.length).to.equal(keysB.length).and.be.greaterThan(1);
    expect(keysA.filter((key) => keysB.includes(key))).to.deep.equal([]);
    console.log(`      same text, two tenants: ${keysA.length} objects each, 0 shared`);

    // Each tenant's answer comes from its own objects at the edge, not from the other's cache entries.
    for (const [key, id] of [
      [ALICE, a.id],
      [BOB, b.id],
    ] as const) {
      const answer = await call(url, key, 'POST', '/v1/query', {
        question: 'What does the keeper do?',
        namespace: 'docs',
        documents: [id],
        maxTokens: 2,
      });
      expect(answer.status, JSON.stringify(answer.body)).to.equal(200);
      const outcome = answer.body as unknown as QueryOutcome;
      expect(outcome.chunks.every((c) => c.tier === (existsSync('/dev/shm') ? 'shm' : 'memory'))).to.equal(true);
      expect(outcome.tokens.reused).to.equal(outcome.tokens.context);
    }

    const origin = openStore(`file:${join(dir, 'data', 'origin')}`);
    const manifests: string[] = [];
    for await (const info of origin.list('manifests/')) manifests.push(info.key);
    await origin.close();
    expect(manifests.sort()).to.deep.equal([`manifests/alice/docs/${a.id}.json`, `manifests/bob/docs/${b.id}.json`].sort());
  });

  it("hides one tenant's documents and jobs from another: list, read, query, warm and delete are 404", async () => {
    const { id, job } = await upload(url, ALICE, { title: 'orchard-plans', text: ALICE_ONLY, namespace: 'private' });

    const list = (await call(url, BOB, 'GET', '/v1/documents?namespace=private')).body as { documents?: DocumentSummary[] };
    expect(list.documents).to.deep.equal([]);
    const probes: [string, string, unknown?][] = [
      ['GET', `/v1/documents/${id}?namespace=private`],
      ['GET', '/v1/documents/orchard-plans?namespace=private'],
      ['GET', `/v1/jobs/${job.id}`],
      ['POST', '/v1/query', { question: 'Where are the pears?', namespace: 'private', documents: [id], maxTokens: 2 }],
      ['POST', '/v1/query', { question: 'Where are the pears?', namespace: 'private', documents: ['orchard-plans'], maxTokens: 2 }],
      ['POST', '/v1/warm/plan', { namespace: 'private', documents: [id] }],
      ['DELETE', `/v1/documents/${id}?namespace=private`],
      [
        'POST',
        '/v1/chat/completions',
        { messages: [{ role: 'user', content: 'pears?' }], max_tokens: 2, kdn: { namespace: 'private', documents: [id] } },
      ],
    ];
    for (const [method, path, body] of probes) {
      const answer = await call(url, BOB, method, path, body);
      expect(answer.status, `${method} ${path}`).to.equal(404);
      // OpenAI routes answer in OpenAI's error shape, kdn's code in kdn_code.
      expect(answer.body.error?.kdn_code ?? answer.body.error?.code).to.equal('NOT_FOUND');
      expect(JSON.stringify(answer.body)).to.not.contain('alice');
    }
    // Retrieval in the same namespace name finds nothing of Alice's, and a warm plan names none of her objects.
    const retrieved = (
      await call(url, BOB, 'POST', '/v1/query', { question: 'pears river gate orchard', namespace: 'private', maxTokens: 2 })
    ).body as unknown as QueryOutcome;
    expect(retrieved.chunks).to.deep.equal([]);
    const plan = (await call(url, BOB, 'POST', '/v1/warm/plan', { namespace: 'private' })).body as unknown as WarmPlan;
    expect(plan.objects).to.deep.equal([]);

    // Alice still has it all.
    expect((await call(url, ALICE, 'GET', `/v1/documents/${id}?namespace=private`)).status).to.equal(200);
    expect((await call(url, ALICE, 'GET', `/v1/jobs/${job.id}`)).status).to.equal(200);
    const hers = (await call(url, ALICE, 'POST', '/v1/query', { question: 'pears river gate orchard', namespace: 'private', maxTokens: 2 }))
      .body as unknown as QueryOutcome;
    expect(hers.chunks.length).to.be.greaterThan(0);
  });

  it('lets every tenant read and query a shared namespace, and only its owner write it', async () => {
    const { id } = await upload(url, ALICE, { title: 'guest-rules', text: SHARED_TEXT, namespace: 'handbook' });
    const list = (await call(url, BOB, 'GET', '/v1/documents?namespace=handbook')).body as {
      namespace: string;
      documents: DocumentSummary[];
    };
    expect(list.namespace).to.equal('handbook');
    expect(list.documents.map((d) => [d.id, d.namespace])).to.deep.equal([[id, 'handbook']]);
    const answer = await call(url, BOB, 'POST', '/v1/query', {
      question: 'What must visitors sign?',
      namespace: 'handbook',
      documents: ['guest-rules'],
      maxTokens: 2,
    });
    expect(answer.status).to.equal(200);
    expect((answer.body as unknown as QueryOutcome).chunks.every((c) => c.tier !== 'computed')).to.equal(true);
    const retrieved = (await call(url, BOB, 'POST', '/v1/query', { question: 'guest book archive', namespace: 'handbook', maxTokens: 2 }))
      .body as unknown as QueryOutcome;
    expect(retrieved.chunks.length).to.be.greaterThan(0);

    const write = await call(url, BOB, 'POST', '/v1/documents', { title: 'graffiti', text: 'bob was here', namespace: 'handbook' });
    expect(write.status).to.equal(403);
    expect(write.body.error?.code).to.equal('FORBIDDEN');
    expect((await call(url, BOB, 'DELETE', `/v1/documents/${id}?namespace=handbook`)).status).to.equal(403);
    expect((await call(url, BOB, 'GET', `/v1/documents/${id}?namespace=handbook`)).status).to.equal(200);
  });

  it('drives warm through the CLI with the edge token from the plan, with the key from KDN_API_KEY', async () => {
    const env = { KDN_SERVER: url, KDN_API_KEY: ALICE };
    const warm = await cliJson<{ keys: number; failed: number; present: number }>(['warm', '--namespace', 'docs'], env);
    expect(warm.failed).to.equal(0);
    expect(warm.keys).to.be.greaterThan(0);
    const denied = await runCli(['docs', 'list', '--namespace', 'docs'], { KDN_SERVER: url, KDN_API_KEY: 'not-a-key-0123456789abcdef' });
    expect(denied.code, 'exit status 4: API key refused').to.equal(4);
    expect(denied.stderr)
      .to.match(/UNAUTHENTICATED/)
      .and.match(/hint: .*Bearer/);
  });

  it('wrote no key file (keys were configured) and keeps the salt secret at the origin', async () => {
    const origin = openStore(`file:${join(dir, 'data', 'origin')}`);
    const secret = (await origin.get('secrets/chunk-salt.key')).toString('utf8');
    await origin.close();
    expect(secret).to.match(/^[0-9a-f]{64}$/);
    const keyFile = await readFile(join(dir, 'data', 'api-key'), 'utf8').then(
      () => true,
      () => false,
    );
    expect(keyFile).to.equal(false);
  });
});
