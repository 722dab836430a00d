import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { expect } from 'chai';
import { KdnApiClient, type QueryResponse } from '../../kdn/client/api-client.ts';
import { TEST_API_KEY, cliJson, runCli, serveArgs, startKdnServe, type Started } from '../../fixtures/processes.ts';
import { testModel, type TestModel } from './support/tiny-model.ts';

const TEXT = 'The lighthouse keeper climbs the tower at dusk and lights the lamp. Ships keep away from the rocks.';

/** The kdn command as a user meets it: version, help, exit statuses, errors in its own terms, streaming. */
describe('kdn CLI', function () {
  this.timeout(120_000);
  let model: TestModel;
  let dir: string;
  let server: Started | undefined;

  before(async () => {
    model = await testModel();
    dir = await mkdtemp(join(tmpdir(), 'kdn-cli-'));
  });

  after(async () => {
    await server?.stop();
    await model?.cleanup();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('prints its version and help with status 0, and usage errors with status 2', async () => {
    const { version } = JSON.parse(readFileSync('package.json', 'utf8')) as { version: string };
    const v = await runCli(['--version']);
    expect(v).to.deep.include({ code: 0, stdout: `${version}\n` });
    const help = await runCli(['--help']);
    expect(help.code).to.equal(0);
    for (const command of ['serve', 'upload', 'query', 'docs', 'warm', 'edge'])
      expect(help.stdout).to.match(new RegExp(`^  ${command} `, 'm'));
    expect(help.stdout).to.include('Exit status');
    const queryHelp = await runCli(['query', '--help']);
    expect(queryHelp.code).to.equal(0);
    expect(queryHelp.stdout).to.include('--no-stream').and.include('--data-dir');

    await writeFile(join(dir, 'empty.txt'), '  \n');
    for (const args of [
      ['bogus'],
      ['query'],
      ['query', '  '],
      ['query', 'x', '--mode', 'fast'],
      ['query', 'x', '--top-k', 'many'],
      ['upload', join(dir, 'empty.txt')],
      ['upload', join(dir, 'missing.txt')],
      ['docs', 'list', '--server', 'not a url'],
    ]) {
      const run = await runCli(args, { KDN_SERVER: 'http://127.0.0.1:9' });
      expect(run.code, `kdn ${args.join(' ')}: ${run.stderr}`).to.equal(2);
      expect(run.stderr, args.join(' ')).to.match(/error|INVALID_ARGUMENT|NOT_FOUND/);
    }
  });

  it('refuses bad numbers in flags with status 2, naming the flag, before anything is sent', async () => {
    for (const [args, message] of [
      [['query', 'x', '--top-k', '-1'], /--top-k must be a whole number of at least 1, got "-1"/],
      [['query', 'x', '--top-k', '1e3'], /--top-k must be a whole number of at least 1, got "1e3"/],
      [['query', 'x', '--max-tokens', '0'], /--max-tokens must be a whole number of at least 1, got "0"/],
      [['query', 'x', '--max-tokens', '1.5'], /--max-tokens must be a whole number of at least 1, got "1.5"/],
      [['query', 'x', '--temperature', '-1'], /--temperature must be from 0 to 2, got -1/],
      [['serve', '--port', 'abc'], /--port <port>' argument 'abc' is invalid\. a port is a whole number from 0 to 65535/],
      [['edge', '--port', '70000'], /--port <port>' argument '70000' is invalid/],
    ] as const) {
      // Port 9 answers nothing: a request sent there would end in status 3, not 2.
      const run = await runCli([...args], { KDN_SERVER: 'http://127.0.0.1:9' });
      expect(run.code, `kdn ${args.join(' ')}: ${run.stderr}`).to.equal(2);
      expect(run.stderr, args.join(' ')).to.match(message).and.not.include('NaN');
    }
    const fromEnv = await runCli(['serve'], { KDN_PORT: 'abc' });
    expect(fromEnv.code, fromEnv.stderr).to.equal(2);
    expect(fromEnv.stderr).to.match(/^kdn: INVALID_ARGUMENT: invalid kdn configuration: port/m);
  });

  it('escapes control characters in titles it prints, such as a document stored before the API refused them', async () => {
    // Today's API refuses such titles, so the document is uploaded plainly and its manifest given the title on disk,
    // as an older kdn would have stored it; a real kdn serve then loads it.
    const evil = '\u001b]0;pwned\u0007\u001b[2J\r\u0000x\u009b';
    const dataDir = join(dir, 'escape-data');
    let started = await startKdnServe({ model: model.dir, dataDir, chunkTokens: 64 });
    await writeFile(join(dir, 'plain.txt'), TEXT);
    try {
      await cliJson(['upload', join(dir, 'plain.txt')], { KDN_SERVER: started.ready.url });
    } finally {
      await started.stop();
    }
    const manifests = join(dataDir, 'origin', 'objects', 'manifests');
    const [file] = (await readdir(manifests, { recursive: true })).filter((f) => f.endsWith('.json'));
    const path = join(manifests, file!);
    const manifest = JSON.parse(await readFile(path, 'utf8')) as { title: string };
    await writeFile(path, JSON.stringify({ ...manifest, title: evil }));
    started = await startKdnServe({ model: model.dir, dataDir, chunkTokens: 64 });
    try {
      const run = await runCli(['docs'], { KDN_SERVER: started.ready.url });
      expect(run.code, run.stderr).to.equal(0);
      expect(run.stdout).to.include('\\x1b]0;pwned\\x07\\x1b[2J\\x0d\\x00x\\x9b');
      expect(run.stdout.replaceAll('\n', '')).to.not.match(/[\u0000-\u001f\u007f-\u009f]/);
    } finally {
      await started.stop();
    }
  });

  it('reports a refused or reset connection as UNAVAILABLE with a hint, status 3', async () => {
    const closed = createServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
    const refusedPort = (closed.address() as AddressInfo).port;
    await new Promise((resolve) => closed.close(resolve));
    const resetting = createServer((socket) => socket.resetAndDestroy());
    await new Promise<void>((resolve) => resetting.listen(0, '127.0.0.1', resolve));
    try {
      for (const port of [refusedPort, (resetting.address() as AddressInfo).port]) {
        const run = await runCli(['docs', 'list'], { KDN_SERVER: `http://127.0.0.1:${port}` });
        expect(run.code, run.stderr).to.equal(3);
        expect(run.stderr)
          .to.match(/^kdn: UNAVAILABLE: cannot reach kdn at http:\/\/127\.0\.0\.1:\d+/m)
          .and.match(/^hint: .*kdn serve/m);
      }
    } finally {
      resetting.close();
    }
  });

  it('prints the banner on stdout and JSON lines on stderr, and finds the generated key through --data-dir or KDN_DATA_DIR', async () => {
    const dataDir = join(dir, 'elsewhere', 'data');
    const child = spawn(process.execPath, ['bin/kdn.js', ...serveArgs({ model: model.dir, dataDir })], {
      env: { ...process.env, KDN_API_KEYS: '', LOG_LEVEL: 'info' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString('utf8')));
    const exited = new Promise((resolve) => child.once('exit', resolve));
    try {
      const banner: string[] = [];
      for await (const line of createInterface({ input: child.stdout })) {
        banner.push(line);
        if (line.startsWith('try:')) break;
      }
      const url = /^kdn serving at (\S+)$/.exec(banner[0]!)![1]!;
      const key = readFileSync(join(dataDir, 'api-key'), 'utf8').trim();
      // stdout is a pipe here, not a terminal: the key stays in its file (0600), named by the banner, and out of the log.
      expect(banner.join('\n')).to.include(join(dataDir, 'api-key')).and.include('npx kdn upload').and.not.include(key);
      expect(stderr).to.not.include(key);
      expect(
        stderr
          .split('\n')
          .filter((l) => l !== '')
          .every((l) => l.startsWith('{') && JSON.parse(l)),
      ).to.equal(true);

      const noKey = { KDN_SERVER: url, KDN_API_KEY: '' };
      const without = await runCli(['docs', 'list'], noKey);
      expect(without.code, without.stderr).to.equal(4);
      expect(without.stderr).to.include('UNAUTHENTICATED');
      expect((await runCli(['docs', 'list', '--data-dir', dataDir], noKey)).code).to.equal(0);
      expect((await runCli(['docs', 'list'], { ...noKey, KDN_DATA_DIR: dataDir })).code).to.equal(0);
    } finally {
      child.kill('SIGTERM');
      await exited;
    }
  });

  it('streams the answer of kdn query (token events, then the result) and prints the same answer with --no-stream', async () => {
    server = await startKdnServe({ model: model.dir, dataDir: join(dir, 'data'), chunkTokens: 64 });
    const env = { KDN_SERVER: server.ready.url };
    await writeFile(join(dir, 'lighthouse.txt'), TEXT);
    await cliJson(['upload', join(dir, 'lighthouse.txt')], env);

    const request = { question: 'What does the keeper do at dusk?', documents: ['lighthouse.txt'], maxTokens: 16 };
    const raw = await fetch(`${server.ready.url}/v1/query`, {
      method: 'POST',
      headers: { authorization: `Bearer ${TEST_API_KEY}`, 'content-type': 'application/json' },
      body: JSON.stringify({ ...request, stream: true }),
    });
    expect(raw.headers.get('content-type')).to.match(/^text\/event-stream/);
    const events = [...(await raw.text()).matchAll(/^event: (\w+)$/gm)].map((m) => m[1]);
    expect(events.at(-1)).to.equal('result');
    expect(events.slice(0, -1).every((e) => e === 'token')).to.equal(true);
    expect(events.length).to.be.greaterThan(2);

    const pieces: string[] = [];
    const streamed = await new KdnApiClient(server.ready.url, TEST_API_KEY).queryStream(request, (text) => pieces.push(text));
    const whole = await cliJson<QueryResponse>(['query', request.question, '--doc', 'lighthouse.txt', '--max-tokens', '16'], env);
    expect(pieces.join('').trim()).to.equal(streamed.answer).and.equal(whole.answer);

    const args = ['query', request.question, '--doc', 'lighthouse.txt', '--max-tokens', '16'];
    const live = await runCli(args, env);
    const waited = await runCli([...args, '--no-stream'], env);
    expect(live.code, live.stderr).to.equal(0);
    expect(live.stdout.split('\ncontext:')[0]).to.equal(`${whole.answer}\n`);
    expect(waited.stdout.split('\ncontext:')[0]).to.equal(`${whole.answer}\n`);
  });

  it('names CLI flags, not API fields, when the server refuses a value', async () => {
    const run = await runCli(['query', 'hi', '--top-k', '999'], { KDN_SERVER: server!.ready.url });
    expect(run.code).to.equal(1);
    expect(run.stderr).to.include('--top-k').and.not.include('topK');
  });
});
