import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import OpenAI, { APIError } from 'openai';
import { KdnApiClient } from '../../kdn/client/api-client.ts';
import { TEST_API_KEY, startKdnServe, type Started } from '../../fixtures/processes.ts';
import { testModel, type TestModel } from './support/tiny-model.ts';

const CATS = 'Cats hunt mice and birds at night. A cat purrs when it is content. Lions live in prides in Africa.';

/** The official OpenAI SDK against `kdn serve`: what an OpenAI client sees, errors included. */
describe('OpenAI compatibility (official openai SDK against kdn serve)', function () {
  this.timeout(120_000);
  let model: TestModel;
  let dir: string;
  let server: Started;
  let client: OpenAI;
  let modelId: string;

  /** The APIError a call rejects with (fails the test when it resolves). */
  const apiError = async (call: Promise<unknown>): Promise<APIError> => {
    try {
      await call;
    } catch (err) {
      if (err instanceof APIError) return err;
      throw err;
    }
    throw new Error('expected the call to fail');
  };

  before(async () => {
    model = await testModel();
    dir = await mkdtemp(join(tmpdir(), 'kdn-openai-'));
    server = await startKdnServe({ model: model.dir, dataDir: join(dir, 'data'), chunkTokens: 64, codec: 'fp16' });
    client = new OpenAI({ baseURL: `${server.ready.url}/v1`, apiKey: TEST_API_KEY, maxRetries: 0 });
    const api = new KdnApiClient(server.ready.url, TEST_API_KEY);
    const { job } = await api.upload({ title: 'cats.md', text: CATS });
    await api.waitForJob(job.id);
  });

  after(async () => {
    await server?.stop();
    await model?.cleanup();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('lists the served model and retrieves it by id; another id is 404 model_not_found', async () => {
    const list = await client.models.list();
    expect(list.data).to.have.length(1);
    modelId = list.data[0]!.id;
    const { data: retrieved, request_id } = await client.models.retrieve(modelId).withResponse();
    expect(retrieved).to.include({ id: modelId, object: 'model', owned_by: 'kdn' });
    expect(request_id).to.be.a('string').and.not.equal('');

    const err = await apiError(client.models.retrieve('gpt-4o'));
    expect(err.status).to.equal(404);
    expect(err).to.include({ type: 'invalid_request_error', code: 'model_not_found', param: 'model' });
    expect(err.requestID).to.be.a('string');
    expect(err.error as { kdn_code: string; hint: string }).to.include({ kdn_code: 'NOT_FOUND' });
    expect((err.error as { hint: string }).hint).to.include(modelId);

    const chat = await apiError(client.chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }] }));
    expect(chat.status).to.equal(404);
    expect(chat.code).to.equal('model_not_found');
  });

  it('answers chat with system and developer roles, text content parts, max_completion_tokens and stop', async () => {
    const { data, request_id } = await client.chat.completions
      .create({
        model: modelId,
        messages: [
          { role: 'system', content: 'You answer briefly.' },
          { role: 'developer', content: 'Use the knowledge given.' },
          {
            role: 'user',
            content: [
              { type: 'text', text: 'What do cats' },
              { type: 'text', text: 'hunt at night?' },
            ],
          },
        ],
        max_completion_tokens: 3,
        stop: ['\n\n\n'],
        kdn: { documents: ['cats.md'] },
      } as OpenAI.Chat.ChatCompletionCreateParamsNonStreaming)
      .withResponse();
    expect(request_id).to.be.a('string').and.not.equal('');
    expect(data.object).to.equal('chat.completion');
    expect(data.model).to.equal(modelId);
    expect(data.choices).to.have.length(1);
    expect(data.choices[0]!.message.role).to.equal('assistant');
    expect(data.usage!.completion_tokens).to.be.within(1, 3);
    expect(data.usage!.prompt_tokens).to.be.greaterThan(20);
  });

  it('honours seed and top_p: same seed, same sample; a tiny top_p samples the greedy answer', async () => {
    const ask = (extra: Partial<OpenAI.Chat.ChatCompletionCreateParamsNonStreaming>): Promise<string> =>
      client.chat.completions
        .create({ model: modelId, messages: [{ role: 'user', content: 'Tell me about cats.' }], max_tokens: 12, ...extra })
        .then((r) => r.choices[0]!.message.content ?? '');
    const greedy = await ask({ temperature: 0 });
    expect(await ask({ temperature: 1.5, top_p: 1e-9, seed: 7 })).to.equal(greedy);
    const a = await ask({ temperature: 1.5, seed: 11, n: 1 });
    expect(await ask({ temperature: 1.5, seed: 11 })).to.equal(a);
  });

  it('stops at a stop string, leaving it out of the answer', async () => {
    const params = { model: modelId, prompt: 'The cat', max_tokens: 24 };
    const whole = (await client.completions.create(params)).choices[0]!.text;
    const words = whole.split(/\s+/).filter((w) => w.length >= 3);
    expect(words.length, `a greedy answer with words to stop at: ${JSON.stringify(whole)}`).to.be.greaterThan(1);
    const stop = words[1]!;
    const stopped = (await client.completions.create({ ...params, stop: [stop] })).choices[0]!;
    expect(stopped.text).to.equal(whole.slice(0, whole.indexOf(stop)));
    expect(stopped.finish_reason).to.equal('stop');
  });

  it('streams chunks whose text is the whole answer, with usage as its own last chunk when asked', async () => {
    const params = { model: modelId, messages: [{ role: 'user' as const, content: 'Where do lions live?' }], max_tokens: 8 };
    const whole = await client.chat.completions.create(params);
    const stream = await client.chat.completions.create({ ...params, stream: true, stream_options: { include_usage: true } });
    const chunks: OpenAI.Chat.ChatCompletionChunk[] = [];
    for await (const chunk of stream) chunks.push(chunk);
    const last = chunks.at(-1)!;
    expect(last.choices).to.deep.equal([]);
    expect(last.usage).to.deep.equal(whole.usage);
    const text = chunks.flatMap((c) => c.choices.map((ch) => ch.delta.content ?? '')).join('');
    expect(text).to.equal(whole.choices[0]!.message.content);
    expect(chunks.at(-2)!.choices[0]!.finish_reason).to.equal(whole.choices[0]!.finish_reason);
    expect(chunks.slice(0, -1).every((c) => !c.usage)).to.equal(true);

    const plain = await client.chat.completions.create({ ...params, stream: true });
    const plainChunks: OpenAI.Chat.ChatCompletionChunk[] = [];
    for await (const chunk of plain) plainChunks.push(chunk);
    expect(plainChunks.every((c) => !c.usage && c.choices.length === 1)).to.equal(true);
  });

  it('completes a prompt given as a string or an array of one string', async () => {
    const one = await client.completions.create({ model: modelId, prompt: 'Cats hunt', max_tokens: 5 });
    const arrayed = await client.completions.create({ model: modelId, prompt: ['Cats hunt'], max_tokens: 5 });
    expect(arrayed.choices[0]!.text).to.equal(one.choices[0]!.text);
    const two = await apiError(client.completions.create({ model: modelId, prompt: ['a', 'b'], max_tokens: 5 }));
    expect(two.status).to.equal(400);
    expect(two.param).to.equal('prompt');
  });

  it('refuses what it does not implement with a 400 naming the field and a hint', async () => {
    const messages = [{ role: 'user' as const, content: 'hi' }];
    const cases: [Record<string, unknown>, string][] = [
      [{ tools: [{ type: 'function', function: { name: 'f', parameters: {} } }] }, 'tools'],
      [{ response_format: { type: 'json_object' } }, 'response_format'],
      [{ logprobs: true }, 'logprobs'],
      [{ n: 2 }, 'n'],
      [{ presence_penalty: 0.5 }, 'presence_penalty'],
      [{ stream_options: { include_usage: true } }, 'stream_options'],
      [{ frobnicate: 1 }, ''],
    ];
    for (const [extra, param] of cases) {
      const err = await apiError(
        client.chat.completions.create({ model: modelId, messages, ...extra } as OpenAI.Chat.ChatCompletionCreateParamsNonStreaming),
      );
      expect(err.status, JSON.stringify(extra)).to.equal(400);
      expect(err.type).to.equal('invalid_request_error');
      expect(err.code).to.equal('invalid_argument');
      expect((err.error as { kdn_code: string }).kdn_code).to.equal('INVALID_ARGUMENT');
      if (param) {
        expect(err.param, JSON.stringify(extra)).to.equal(param);
        expect((err.error as { hint?: string }).hint, JSON.stringify(extra)).to.be.a('string');
      } else {
        expect(err.message).to.include('frobnicate');
      }
    }
    // Neutral values of unsupported options ask for nothing kdn lacks.
    const neutral = await client.chat.completions.create({
      model: modelId,
      messages,
      max_tokens: 2,
      logprobs: false,
      presence_penalty: 0,
      tool_choice: 'none',
      response_format: { type: 'text' },
    });
    expect(neutral.choices).to.have.length(1);

    const image = await apiError(
      client.chat.completions.create({
        model: modelId,
        messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url: 'http://x/y.png' } }] }],
      }),
    );
    expect(image.status).to.equal(400);
    expect((image.error as { hint: string }).hint).to.include('text');
    const tool = await apiError(
      client.chat.completions.create({ model: modelId, messages: [{ role: 'tool', content: 'x', tool_call_id: 'c1' }] }),
    );
    expect(tool.status).to.equal(400);
    expect((tool.error as { hint: string }).hint).to.include('tool');
  });

  it('answers a wrong key with an authentication_error carrying a request id', async () => {
    const wrong = new OpenAI({ baseURL: `${server.ready.url}/v1`, apiKey: 'not-a-key', maxRetries: 0 });
    const err = await apiError(wrong.models.list());
    expect(err.status).to.equal(401);
    expect(err).to.include({ type: 'authentication_error', code: 'invalid_api_key' });
    expect(err.requestID).to.be.a('string');
  });

  it('puts x-request-id on every response and keeps one the client sent', async () => {
    const url = server.ready.url;
    for (const path of ['/healthz', '/v1/nothing-here', '/metrics']) {
      const res = await fetch(`${url}${path}`);
      expect(res.headers.get('x-request-id'), path).to.match(/^[0-9a-f-]{36}$/);
    }
    const given = await fetch(`${url}/healthz`, { headers: { 'x-request-id': 'trace-abc.123' } });
    expect(given.headers.get('x-request-id')).to.equal('trace-abc.123');
    const odd = await fetch(`${url}/healthz`, { headers: { 'x-request-id': 'has spaces and "quotes"' } });
    expect(odd.headers.get('x-request-id')).to.match(/^[0-9a-f-]{36}$/);
    // Non-OpenAI routes keep kdn's error shape.
    const kdn = (await (await fetch(`${url}/v1/nothing-here`)).json()) as { error: { code: string } };
    expect(kdn.error.code).to.equal('UNAUTHENTICATED');
  });
});
