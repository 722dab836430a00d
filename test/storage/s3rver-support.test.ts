import { expect } from 'chai';
import { spawn } from 'node:child_process';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { openStore } from '../../storage/open-store.ts';

const script = fileURLToPath(new URL('../support/s3rver-process.ts', import.meta.url));

describe('test/support/s3rver-process', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'kdn-s3rver-proc-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('runs s3rver in its own process, prints a ready line, serves a store and stops on SIGTERM', async function () {
    this.timeout(30_000);
    const child = spawn(process.execPath, ['--import', 'tsx', script, '--port', '0', '--dir', dir, '--bucket', 'proc-bucket'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    try {
      const line = await new Promise<string>((resolve, reject) => {
        createInterface({ input: child.stdout }).once('line', resolve);
        child.once('exit', () => reject(new Error(`s3rver-process exited before ready: ${stderr}`)));
      });
      const ready = JSON.parse(line) as { ready: boolean; port: number; url: string };
      expect(ready.ready).to.equal(true);
      expect(ready.port).to.be.a('number').and.greaterThan(0);

      const store = openStore(ready.url);
      await store.put('hello/world', Buffer.from('from another process'));
      expect((await store.get('hello/world')).toString()).to.equal('from another process');
      await store.close();
      expect(await readdir(dir)).to.include('proc-bucket');
    } finally {
      child.kill('SIGTERM');
    }
    expect(await exited, stderr).to.equal(0);
  });
});
