import { expect } from 'chai';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { TEST_EDGE_SECRET, tokenHeader } from './helpers.ts';

/** Runs `node bin/kdn.js edge ...args` to completion. */
async function kdnEdge(args: string[]): Promise<{ code: number | null; stderr: string }> {
  const env = { ...process.env };
  delete env['KDN_EDGE_ORIGIN'];
  const child = spawn(process.execPath, ['bin/kdn.js', 'edge', ...args], { stdio: ['ignore', 'ignore', 'pipe'], env });
  let stderr = '';
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const [code] = (await once(child, 'exit')) as [number | null];
  return { code, stderr };
}

describe('kdn edge (CLI)', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'kdn-edge-cli-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('refuses bad sizes and a missing origin with a clear message', async () => {
    const badSize = await kdnEdge(['--port', '0', '--origin', `file:${dir}`, '--memory', 'lots']);
    expect(badSize.code).to.equal(1);
    expect(badSize.stderr).to.include('INVALID_ARGUMENT').and.include('memoryBytes');
    const noOrigin = await kdnEdge(['--port', '0', '--disk-path', dir]);
    expect(noOrigin.code).to.equal(1);
    expect(noOrigin.stderr).to.include('originUrl');
  });

  it('prints its URL, serves, and shuts down cleanly on SIGTERM (its shared-memory folder removed)', async () => {
    const diskPath = join(dir, 'disk');
    const shmDir = join(dir, 'shm');
    await mkdir(shmDir);
    const child = spawn(
      process.execPath,
      [
        'bin/kdn.js',
        'edge',
        '--port',
        '0',
        '--origin',
        `file:${join(dir, 'origin')}`,
        '--disk-path',
        diskPath,
        '--memory',
        '64MiB',
        '--disk',
        '1GiB',
        '--edge-secret',
        TEST_EDGE_SECRET,
        '--shm-dir',
        shmDir,
      ],
      {
        stdio: ['ignore', 'pipe', 'inherit'],
      },
    );
    const [line] = (await once(createInterface({ input: child.stdout }), 'line')) as [string];
    const url = /listening on (http:\/\/\S+)/.exec(line)?.[1];
    expect(url, line).to.be.a('string');
    const health = await fetch(`${url}/healthz`);
    expect(health.status).to.equal(200);
    expect((await fetch(`${url}/stats`)).status).to.equal(401);
    const stats = (await (await fetch(`${url}/stats`, { headers: tokenHeader('GET', '/stats') })).json()) as {
      memory: { budgetBytes: number };
      disk: { budgetBytes: number };
    };
    expect(stats.memory.budgetBytes).to.equal(64 * 2 ** 20);
    expect(stats.disk.budgetBytes).to.equal(2 ** 30);
    expect(existsSync(join(diskPath, '.lock'))).to.equal(true);
    const shm = (await (await fetch(`${url}/shm`, { headers: tokenHeader('GET', '/shm') })).json()) as { dir: string; instance: string };
    expect(shm.dir.startsWith(join(shmDir, 'kdn-edge-'))).to.equal(true);
    expect(readFileSync(join(shm.dir, 'instance'), 'utf8')).to.equal(shm.instance);

    child.kill('SIGTERM');
    const [code] = (await once(child, 'exit')) as [number | null];
    expect(code).to.equal(0);
    expect(existsSync(join(diskPath, '.lock'))).to.equal(false);
    expect(existsSync(shm.dir)).to.equal(false);
  });
});
