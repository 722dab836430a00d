import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { expect } from 'chai';
import { resolveKdnConfig } from '../../kdn/config.ts';
import type { JobView } from '../../kdn/ingest/jobs.ts';
import { startKdn, type RunningKdn } from '../../kdn/server.ts';
import { testModel, type TestModel } from '../kdn/support/tiny-model.ts';

const KEY = 'alice-key-0123456789abcdef';

interface Reply {
  status: number;
  error: { code?: string; message?: string; hint?: string; type?: string; param?: string | null; kdn_code?: string };
  body: Record<string, unknown>;
}

/**
 * What a client may send and what kdn refuses, over real sockets to an in-process kdn: compressed multipart forms,
 * fields kdn does not know or would ignore, blank documents, control characters in names, bodies that are not JSON
 * objects, and the delete of a document whose ingest job has not finished.
 */
describe('security: input kdn refuses rather than ignores', function () {
  this.timeout(120_000);
  let model: TestModel;
  let dir: string;
  let kdn: RunningKdn;

  const request = async (method: string, path: string, body?: string | Buffer, headers: Record<string, string> = {}): Promise<Reply> => {
    const res = await fetch(`${kdn.url}${path}`, {
      method,
      headers: { authorization: `Bearer ${KEY}`, ...headers },
      ...(body ? { body } : {}),
    });
    const parsed = (await res.json()) as Record<string, unknown>;
    return { status: res.status, error: (parsed.error ?? {}) as Reply['error'], body: parsed };
  };
  const post = (path: string, body: unknown): Promise<Reply> =>
    request('POST', path, JSON.stringify(body), { 'content-type': 'application/json' });
  const form = (text: string, title: string): { body: Buffer; type: string } => {
    const boundary = 'kdn-test-boundary';
    const body = Buffer.from(
      `--${boundary}\r\nContent-Disposition: form-data; name="title"\r\n\r\n${title}\r\n` +
        `--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="ce.txt"\r\nContent-Type: text/plain\r\n\r\n${text}\r\n` +
        `--${boundary}--\r\n`,
    );
    return { body, type: `multipart/form-data; boundary=${boundary}` };
  };

  before(async () => {
    model = await testModel();
    dir = await mkdtemp(join(tmpdir(), 'kdn-input-'));
    const config = resolveKdnConfig(
      {
        dataDir: dir,
        port: 0,
        model: model.dir,
        backend: 'cpu',
        chunkTokens: 64,
        apiKeys: `${KEY}=alice`,
        rateLimit: '0',
        fetchThreads: 0,
      },
      {},
    );
    kdn = await startKdn(config);
  });

  after(async () => {
    await kdn?.close();
    await model?.cleanup();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('refuses a multipart upload with a Content-Encoding other than identity (415), and takes it uncompressed', async () => {
    const plain = form('The keeper lights the lamp at dusk.', 'ce');
    for (const [encoding, body] of [
      ['zstd', plain.body],
      ['gzip', plain.body],
      ['gzip', gzipSync(plain.body)],
    ] as const) {
      const reply = await request('POST', '/v1/documents', body, { 'content-type': plain.type, 'content-encoding': encoding });
      expect(reply.status, encoding).to.equal(415);
      expect(reply.error.code).to.equal('UNSUPPORTED_MEDIA_TYPE');
      expect(reply.error.message).to.include(`Content-Encoding "${encoding}"`);
      expect(reply.error.hint).to.match(/without Content-Encoding|as JSON/);
    }
    const identity = await request('POST', '/v1/documents', plain.body, { 'content-type': plain.type, 'content-encoding': 'identity' });
    expect(identity.status, JSON.stringify(identity.body)).to.equal(202);
  });

  it('refuses unknown fields on every route, naming them, instead of ignoring them', async () => {
    for (const [path, body] of [
      ['/v1/query', { question: 'who?', maxtokens: 3, topk: 99, bogus: 1 }],
      ['/v1/documents', { title: 'foo', text: 'some text', foo: 1 }],
      ['/v1/warm/plan', { namespace: 'default', docs: ['x'] }],
    ] as const) {
      const reply = await post(path, body);
      expect(reply.status, path).to.equal(400);
      expect(reply.error.code, path).to.equal('INVALID_ARGUMENT');
      const unknown = Object.keys(body).filter((k) => !['question', 'title', 'text', 'namespace'].includes(k));
      for (const key of unknown) expect(reply.error.message, path).to.include(`"${key}"`);
      expect(reply.error.hint, path).to.match(/^remove .*does not know/);
    }
    for (const path of ['/v1/documents?namespace=default&bogus=1', '/v1/jobs?state=running']) {
      const reply = await request('GET', path);
      expect(reply.status, path).to.equal(400);
      expect(reply.error.message, path).to.match(/"(bogus|state)"/);
    }
  });

  it('refuses blendRatio with a mode other than blend, on /v1/query and in the OpenAI kdn field (param named)', async () => {
    const query = await post('/v1/query', { question: 'who?', mode: 'recompute', blendRatio: 0.5 });
    expect(query.status).to.equal(400);
    expect(query.error.message).to.include('blendRatio').and.include('"recompute"');
    expect((await post('/v1/query', { question: 'who?', blendRatio: 0.5 })).status, 'the default mode is inject').to.equal(400);

    const openai = await post('/v1/completions', { prompt: 'The', max_tokens: 3, kdn: { mode: 'recompute', blendRatio: 0.5 } });
    expect(openai.status).to.equal(400);
    expect(openai.error).to.deep.include({ type: 'invalid_request_error', param: 'kdn.blendRatio', kdn_code: 'INVALID_ARGUMENT' });
    expect(openai.error.hint).to.match(/with another mode, leave it out/);
  });

  it('refuses a document whose text is only whitespace, as JSON and as a multipart file', async () => {
    const json = await post('/v1/documents', { title: 'ws', text: '   \n\n  ' });
    expect(json.status).to.equal(400);
    expect(json.error.message).to.match(/text: is only whitespace/);
    const blank = form(' \n\t\n', 'ws2');
    const multipart = await request('POST', '/v1/documents', blank.body, { 'content-type': blank.type });
    expect(multipart.status).to.equal(400);
    expect(multipart.error.message).to.match(/text: is only whitespace/);
  });

  it('refuses control characters in titles, document references and OpenAI names (400 naming the field)', async () => {
    for (const title of ['\u001b]0;pwned\u0007x', 'a\u0000b', 'line\rover', 'tab\there', 'c1\u009b2J']) {
      const reply = await post('/v1/documents', { title, text: 'The keeper lights the lamp.' });
      expect(reply.status, JSON.stringify(title)).to.equal(400);
      expect(reply.error.message).to.match(/title: must not contain control characters/);
      expect(reply.error.hint).to.match(/printable/);
    }
    const upload = form('The keeper lights the lamp.', '\u001b[2Jcleared');
    const multipart = await request('POST', '/v1/documents', upload.body, { 'content-type': upload.type });
    expect(multipart.status).to.equal(400);
    const query = await post('/v1/query', { question: 'who?', documents: ['\u001b[2J'] });
    expect(query.status).to.equal(400);
    expect(query.error.message).to.match(/documents\.0: must not contain control characters/);
    const chat = await post('/v1/chat/completions', { messages: [{ role: 'user', content: 'hi', name: 'a\u001bb' }], max_tokens: 2 });
    expect(chat.status).to.equal(400);
    expect(chat.error.param).to.equal('messages.0.name');
    const trimmed = await post('/v1/documents', { title: '  spaced title \n', text: 'The keeper lights the lamp.' });
    expect(trimmed.status, 'whitespace around a title is trimmed, not refused').to.equal(202);
  });

  it('says a body must be a JSON object when it is valid JSON of another kind', async () => {
    for (const body of ['null', '"str"', '3']) {
      const reply = await request('POST', '/v1/query', body, { 'content-type': 'application/json' });
      expect(reply.status, body).to.equal(400);
      expect(reply.error.message, body).to.match(/^the request body must be a JSON object, not (null|string|number)$/);
    }
    const broken = await request('POST', '/v1/query', '{"question": ', { 'content-type': 'application/json' });
    expect(broken.error.message).to.equal('request body is not valid JSON');
  });

  it('names the ingest job when the document to delete is still being ingested', async () => {
    let release!: () => void;
    const held = new Promise<void>((resolve) => (release = resolve));
    const slots = Array.from({ length: kdn.parts.config.engineBatch }, () =>
      kdn.parts.scheduler.run(() => held, { tenant: 'test-holder', priority: 'interactive', cost: 1 }),
    );
    try {
      const upload = await post('/v1/documents', { title: 'pending.txt', text: 'The ferry leaves the harbour at noon.' });
      expect(upload.status).to.equal(202);
      const { job, document } = upload.body as { job: JobView; document: { id: string } };
      for (const ref of ['pending.txt', document.id]) {
        const reply = await request('DELETE', `/v1/documents/${encodeURIComponent(ref)}`);
        expect(reply.status, ref).to.equal(404);
        expect(reply.error.message).to.include(`ingest job ${job.id} is still`);
        expect(reply.error.hint).to.include(`kdn jobs cancel ${job.id}`);
      }
      const absent = await request('DELETE', '/v1/documents/never-uploaded');
      expect(absent.error.hint).to.match(/kdn docs list/);
    } finally {
      release();
      await Promise.all(slots);
    }
  });
});
