import { spawn } from 'node:child_process';
import { chmod, mkdtemp, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import { tokenHeader } from '../edge/helpers.ts';
import { runCli, serveArgs, startProcess, type Started } from '../../fixtures/processes.ts';
import { testModel, type TestModel } from '../kdn/support/tiny-model.ts';

const SERVE_ARGS = (dataDir: string, model: string): string[] => [
  'bin/kdn.js',
  ...serveArgs({ model, dataDir, chunkTokens: 16, args: ['--fetch-threads', '0'] }),
];

/** Every file and folder under `dir` with its permission bits. */
async function modes(dir: string): Promise<{ path: string; dir: boolean; mode: number }[]> {
  const out: { path: string; dir: boolean; mode: number }[] = [{ path: dir, dir: true, mode: (await stat(dir)).mode & 0o777 }];
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...(await modes(path)));
    else out.push({ path, dir: false, mode: (await stat(path)).mode & 0o777 });
  }
  return out;
}

/**
 * Runs `kdn serve` under a pseudo-terminal (util-linux `script`), as a person would, until it prints its
 * "serving at" line, then stops it; returns what the terminal showed and what went to stderr (the log) apart.
 */
async function serveOnTerminal(dataDir: string, model: string, env: NodeJS.ProcessEnv): Promise<{ terminal: string; log: string }> {
  const logFile = join(dataDir, '..', `log-${Date.now()}.txt`);
  const command = `${process.execPath} ${SERVE_ARGS(dataDir, model).join(' ')} 2>${logFile}`;
  const child = spawn('script', ['-qfec', command, '/dev/null'], { env: { ...process.env, ...env }, stdio: ['pipe', 'pipe', 'pipe'] });
  let terminal = '';
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`kdn serve did not start on a terminal:\n${terminal}`)), 30_000);
    child.stdout.on('data', (chunk: Buffer) => {
      terminal += chunk.toString('utf8');
      if (terminal.includes('serving at')) {
        clearTimeout(timer);
        resolve();
      }
    });
    child.once('exit', () => reject(new Error(`kdn serve exited:\n${terminal}`)));
  });
  child.kill('SIGTERM');
  await new Promise((resolve) => child.once('close', resolve));
  return { terminal, log: await readFile(logFile, 'utf8') };
}

describe('security: secrets at rest and on the command line', function () {
  this.timeout(90_000);
  let model: TestModel;
  let dir: string;
  const running: Started[] = [];

  before(async () => {
    model = await testModel({ preferShipped: false });
    dir = await mkdtemp(join(tmpdir(), 'kdn-secrets-'));
  });

  after(async () => {
    for (const started of running) await started.stop();
    await model?.cleanup();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('7: the generated API key is shown once on the terminal and never in the log; origin files are 0600 and folders 0700', async () => {
    const dataDir = join(dir, 'data');
    const env = { KDN_API_KEYS: '', KDN_EDGE_SECRET: '', LOG_LEVEL: 'debug' };
    const first = await serveOnTerminal(dataDir, model.dir, env);
    const key = (await readFile(join(dataDir, 'api-key'), 'utf8')).trim();
    expect(first.terminal).to.contain(key);
    expect(first.log).to.not.contain(key);
    const second = await serveOnTerminal(dataDir, model.dir, env);
    expect(second.terminal, 'printed only when made').to.not.contain(key);
    expect(second.terminal).to.contain(join(dataDir, 'api-key'));
    expect(second.log).to.not.contain(key);

    const origin = await modes(join(dataDir, 'origin'));
    expect(origin.find((entry) => entry.path.endsWith('chunk-salt.key'))).to.include({ mode: 0o600 });
    const loose = origin.filter((entry) => entry.mode !== (entry.dir ? 0o700 : 0o600));
    expect(loose, JSON.stringify(loose)).to.deep.equal([]);
    // The embedded edge's disk tier holds every tenant's KV: its objects too.
    const edgeObjects = await modes(join(dataDir, 'edge', 'objects'));
    const looseEdge = edgeObjects.filter((entry) => entry.mode !== (entry.dir ? 0o700 : 0o600));
    expect(looseEdge, JSON.stringify(looseEdge)).to.deep.equal([]);
  });

  it('7: an origin left world-readable by an older version is closed to other users when kdn opens it', async () => {
    const dataDir = join(dir, 'old');
    const env = { KDN_API_KEYS: `old-key-0123456789abcdef=t`, KDN_EDGE_SECRET: '' };
    const kdn = await startProcess([...SERVE_ARGS(dataDir, model.dir), '--json'], { env });
    await kdn.stop('SIGTERM');
    await chmod(join(dataDir, 'origin'), 0o755);
    const again = await startProcess([...SERVE_ARGS(dataDir, model.dir), '--json'], { env });
    running.push(again);
    expect((await stat(join(dataDir, 'origin'))).mode & 0o777).to.equal(0o700);

    // The CLI takes its key from a 0600 file too, instead of a flag other users can read in the process list.
    const keyFile = join(dir, 'cli-key');
    await writeFile(keyFile, 'old-key-0123456789abcdef\n', { mode: 0o600 });
    const listed = await runCli(['docs', 'list', '--server', again.ready.url, '--api-key-file', keyFile, '--json'], { KDN_API_KEY: '' });
    expect(listed.code, listed.stderr).to.equal(0);
    expect(JSON.parse(listed.stdout)).to.deep.equal({ namespace: 'default', documents: [] });
  });

  it('7: the edge secret is taken from a 0600 file (flag or env) instead of the process list; a readable file is refused', async () => {
    const secretFile = join(dir, 'edge-secret');
    await writeFile(secretFile, 'file-secret-0123456789abcdef\n', { mode: 0o600 });
    const base = [
      'bin/kdn.js',
      'edge',
      '--port',
      '0',
      '--origin',
      `file:${join(dir, 'edge-origin')}`,
      '--disk-path',
      join(dir, 'edge-disk'),
      '--json',
    ];
    const viaFlag = await startProcess([...base, '--edge-secret-file', secretFile], { env: { KDN_EDGE_SECRET: '' } });
    running.push(viaFlag);
    // What any local user sees of the process (ps reads the same file).
    const commandLine = (await readFile(`/proc/${viaFlag.child.pid}/cmdline`, 'utf8')).split('\0').join(' ');
    expect(commandLine).to.contain('--edge-secret-file').and.not.contain('file-secret-0123456789abcdef');
    const stats = await fetch(`${viaFlag.ready.url}/stats`, { headers: tokenHeader('GET', '/stats', 'file-secret-0123456789abcdef') });
    expect(stats.status).to.equal(200);

    const viaEnv = await startProcess(
      base.map((arg) => (arg.endsWith('edge-disk') ? `${arg}-2` : arg)),
      { env: { KDN_EDGE_SECRET: '', KDN_EDGE_SECRET_FILE: secretFile } },
    );
    running.push(viaEnv);
    expect(
      (await fetch(`${viaEnv.ready.url}/stats`, { headers: tokenHeader('GET', '/stats', 'file-secret-0123456789abcdef') })).status,
    ).to.equal(200);

    await chmod(secretFile, 0o644);
    const refused = await startProcess([...base, '--edge-secret-file', secretFile], { env: { KDN_EDGE_SECRET: '' } }).then(
      () => null,
      (err: Error) => err.message,
    );
    expect(refused).to.contain('can be read by other users');
  });
});
