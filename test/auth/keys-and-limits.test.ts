import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import { cliJson, startKdnServe, type Started } from '../../fixtures/processes.ts';
import { testModel, type TestModel } from '../kdn/support/tiny-model.ts';

/** `kdn serve` without configured keys, keys from a file, the per-key rate limit, and request caps. */
describe('API key setup and limits', function () {
  this.timeout(60_000);
  let model: TestModel;
  let dir: string;
  const running: Started[] = [];

  const serve = async (args: string[], env: NodeJS.ProcessEnv): Promise<Started> => {
    const started = await startKdnServe({ model: model.dir, chunkTokens: 16, args, env });
    running.push(started);
    return started;
  };

  before(async () => {
    model = await testModel({ preferShipped: false });
    dir = await mkdtemp(join(tmpdir(), 'kdn-keys-'));
  });

  after(async () => {
    for (const started of running) await started.stop();
    await model?.cleanup();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('generates a key when none is configured, prints it, saves it for the local CLI, and keeps it across restarts', async () => {
    const dataDir = join(dir, 'data');
    const env = { KDN_API_KEYS: '', KDN_DATA_DIR: dataDir };
    const first = await serve([], env);
    const keyFile = join(dataDir, 'api-key');
    const key = (await readFile(keyFile, 'utf8')).trim();
    expect(key).to.match(/^kdn_[A-Za-z0-9_-]{43}$/);
    expect((await stat(keyFile)).mode & 0o777).to.equal(0o600);
    // The ready line names the key's file; the logs (stderr, JSON lines) never carry the key itself.
    expect(first.ready.apiKeyFile).to.equal(keyFile);
    await new Promise((resolve) => setTimeout(resolve, 100));
    // Never into the log; with --json (no terminal) not printed at all: it is in the file.
    expect(first.stderr()).to.not.contain(key);

    expect((await fetch(`${first.ready.url}/v1/status`)).status).to.equal(401);
    expect((await fetch(`${first.ready.url}/v1/status`, { headers: { authorization: `Bearer ${key}` } })).status).to.equal(200);
    // The CLI on this machine finds the key in the default data directory (KDN_DATA_DIR) by itself.
    const listed = await cliJson<{ namespace: string; documents: unknown[] }>(['docs', 'list'], {
      KDN_SERVER: first.ready.url,
      KDN_API_KEY: '',
      KDN_DATA_DIR: dataDir,
    });
    expect(listed).to.deep.equal({ namespace: 'default', documents: [] });

    await first.stop('SIGTERM');
    const second = await serve([], env);
    expect((await fetch(`${second.ready.url}/v1/status`, { headers: { authorization: `Bearer ${key}` } })).status).to.equal(200);
  });

  it('reads keys from --api-keys-file, limits each key to its rate with 429 and Retry-After, caps request sizes, and bounds queries by a deadline', async () => {
    const keysFile = join(dir, 'keys.json');
    await writeFile(
      keysFile,
      JSON.stringify({
        keys: [
          { key: 'file-key-one-0123456789', tenant: 'one', role: 'operator' },
          { key: 'file-key-two-0123456789', tenant: 'two', role: 'operator' },
        ],
      }),
    );
    const kdn = await serve(
      [
        '--data-dir',
        join(dir, 'limited'),
        '--api-keys-file',
        keysFile,
        '--rate-limit',
        '2,4',
        '--max-upload',
        '1KiB',
        '--query-timeout',
        '1',
      ],
      { KDN_API_KEYS: '' },
    );
    const get = (key: string): Promise<Response> => fetch(`${kdn.ready.url}/v1/status`, { headers: { authorization: `Bearer ${key}` } });

    const statuses: number[] = [];
    let limited: Response | undefined;
    for (let i = 0; i < 8; i++) {
      const res = await get('file-key-one-0123456789');
      statuses.push(res.status);
      if (res.status === 429) limited ??= res;
      else await res.arrayBuffer();
    }
    console.log(`      8 back-to-back requests at 2/s, burst 4: ${statuses.join(' ')}`);
    expect(statuses.slice(0, 4)).to.deep.equal([200, 200, 200, 200]);
    expect(statuses.filter((s) => s === 429).length).to.be.at.least(3);
    expect(limited!.headers.get('retry-after')).to.match(/^[1-9]\d*$/);
    expect(((await limited!.json()) as { error: { code: string } }).error.code).to.equal('RATE_LIMITED');
    // Another key has its own bucket.
    expect((await get('file-key-two-0123456789')).status).to.equal(200);

    const post = (path: string, body: unknown): Promise<Response> =>
      fetch(`${kdn.ready.url}${path}`, {
        method: 'POST',
        headers: { authorization: 'Bearer file-key-two-0123456789', 'content-type': 'application/json' },
        body: JSON.stringify(body),
      });
    const cases: [string, unknown, number][] = [
      ['/v1/documents', { title: 'big', text: 'x'.repeat(2048) }, 413],
      ['/v1/query', { question: 'q'.repeat(8001) }, 400],
      ['/v1/query', { question: 'q', maxTokens: 5000 }, 400],
      ['/v1/query', { question: 'q', documents: Array.from({ length: 33 }, (_, i) => `d${i}`) }, 400],
      ['/v1/chat/completions', { messages: Array.from({ length: 65 }, () => ({ role: 'user', content: 'hi' })) }, 400],
      // Past its deadline (1 ms here) a query stops and answers 504 TIMEOUT.
      ['/v1/query', { question: 'What is here?', maxTokens: 64 }, 504],
    ];
    for (const [path, body, status] of cases) {
      await new Promise((resolve) => setTimeout(resolve, 500));
      const res = await post(path, body);
      const answer = (await res.json()) as { error: { message: string } };
      expect(res.status, `${path}: ${answer.error.message}`).to.equal(status);
      expect(answer.error.message).to.be.a('string').and.not.equal('');
    }
  });
});
