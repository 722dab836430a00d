import { expect } from 'chai';
import { existsSync, readlinkSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createLogger } from '../../common/log.ts';
import { ShmMirror } from '../../edge/server/shm-mirror.ts';

const log = createLogger('test');
const MINUTES_AGO = (n: number): Date => new Date(Date.now() - n * 60_000);

/** A folder as an edge of another PID namespace (another container) leaves it: pid 1 means nothing here. */
async function foreignFolder(parent: string, name: string, renewedAt: Date): Promise<string> {
  const folder = join(parent, `kdn-edge-${name}`);
  await mkdir(folder);
  await writeFile(join(folder, 'pid'), JSON.stringify({ pid: 1, pidNamespace: 'pid:[1]' }));
  await utimes(join(folder, 'pid'), renewedAt, renewedAt);
  return folder;
}

describe('edge shared-memory folders: ownership across PID namespaces', function () {
  this.timeout(10_000);
  let parent: string;

  beforeEach(async () => {
    parent = await mkdtemp(join(tmpdir(), 'kdn-shm-lease-'));
  });
  afterEach(async () => {
    await rm(parent, { recursive: true, force: true });
  });

  it('names its owner by pid and PID namespace', async () => {
    const mirror = await ShmMirror.open(parent, log);
    try {
      const owner = JSON.parse(await readFile(join(mirror.dir, 'pid'), 'utf8'));
      const namespace = existsSync('/proc/self/ns/pid') ? readlinkSync('/proc/self/ns/pid') : null;
      expect(owner).to.deep.equal({ pid: process.pid, pidNamespace: namespace });
    } finally {
      await mirror.close();
    }
  });

  it('at start keeps a foreign folder whose lease is current, and removes one whose lease lapsed', async () => {
    const current = await foreignFolder(parent, 'current', new Date());
    const lapsed = await foreignFolder(parent, 'lapsed', MINUTES_AGO(2));
    // Killed between making its folder and writing its owner file: only the folder's own time says how old it is.
    const unowned = join(parent, 'kdn-edge-unowned');
    await mkdir(unowned);
    await utimes(unowned, MINUTES_AGO(2), MINUTES_AGO(2));
    const mirror = await ShmMirror.open(parent, log);
    try {
      expect(existsSync(current), 'an edge of another namespace still renewing').to.equal(true);
      expect(existsSync(lapsed), 'an edge of another namespace that stopped renewing').to.equal(false);
      expect(existsSync(unowned), 'a folder with no owner, older than the lease').to.equal(false);
    } finally {
      await mirror.close();
    }
  });

  it('renews its own lease while it runs and removes folders whose owners stop renewing', async () => {
    const lease = { renewMs: 40, expireMs: 400 };
    const mirror = await ShmMirror.open(parent, log, lease);
    // A restarted container's edge: the folder its predecessor left looks alive at first, then lapses.
    const predecessor = await foreignFolder(parent, 'predecessor', new Date());
    try {
      const first = (await stat(join(mirror.dir, 'pid'))).mtimeMs;
      await new Promise((resolve) => setTimeout(resolve, 200));
      expect(existsSync(predecessor), 'within the lease').to.equal(true);
      await new Promise((resolve) => setTimeout(resolve, 500));
      expect(existsSync(predecessor), 'past the lease').to.equal(false);
      expect((await stat(join(mirror.dir, 'pid'))).mtimeMs).to.be.greaterThan(first);
      expect(existsSync(join(mirror.dir, 'instance')), 'its own folder').to.equal(true);
    } finally {
      await mirror.close();
    }
    expect(existsSync(mirror.dir)).to.equal(false);
  });

  it('reads a bare pid, as earlier edges wrote it, as a process of this namespace', async () => {
    const folder = join(parent, 'kdn-edge-old');
    await mkdir(folder);
    await writeFile(join(folder, 'pid'), String(process.pid));
    const mirror = await ShmMirror.open(parent, log);
    await mirror.close();
    expect(existsSync(folder), 'this process is alive').to.equal(true);
  });
});
