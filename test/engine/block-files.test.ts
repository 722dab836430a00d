import { expect } from 'chai';
import { mkdtempSync, readdirSync, readlinkSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BlockFiles, type HeldFile } from '../../engine-adapter/webgpu/block-files.ts';
import { fileIdentity } from '../../storage/kv-object/index.ts';
import type { KVBlockSource } from '../../storage/kv-object/types.ts';

/** How many of this process's descriptors are open on `path` (Linux: /proc/self/fd). */
function openOn(path: string): number {
  return readdirSync('/proc/self/fd').filter((fd) => {
    try {
      return readlinkSync(`/proc/self/fd/${fd}`) === path;
    } catch {
      return false;
    }
  }).length;
}

/** Whether `held` filled all of `into` from `position` on. */
const readInto = (held: HeldFile, into: Uint8Array, position: number): Promise<boolean> =>
  new Promise((resolve) => held.read(into, position, resolve));

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** Resolves once `done()` holds; fails after two seconds (timers run late on a busy host). */
async function until(done: () => boolean): Promise<void> {
  for (let i = 0; i < 200 && !done(); i++) await sleep(10);
  expect(done(), 'still not so after 2 s').to.equal(true);
}

describe("block files: a same-host edge's files, read by libuv's pool for the engine", () => {
  let dir: string;
  before(function () {
    if (process.platform !== 'linux') this.skip();
    dir = mkdtempSync(join(tmpdir(), 'kdn-block-files-'));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  function write(name: string, bytes: Uint8Array): KVBlockSource {
    const path = join(dir, name);
    writeFileSync(path, bytes);
    return { path, identity: fileIdentity(statSync(path)), position: 0, length: bytes.length };
  }

  it('reads a block at its offset, one descriptor for every writer of a file, closed once none holds it', async () => {
    const bytes = Uint8Array.from({ length: 4096 }, (_, i) => (i * 7) & 255);
    const source = write('object', bytes);
    const files = new BlockFiles(30);
    const [a, b] = await Promise.all([files.acquire(source), files.acquire({ ...source, position: 1000 })]);
    expect(openOn(source.path)).to.equal(1);
    const into = new Uint8Array(96);
    expect(await readInto(b!, into, 1000)).to.equal(true);
    expect([...into]).to.deep.equal([...bytes.subarray(1000, 1096)]);
    b!.release();
    await sleep(100);
    // Still held by the first writer.
    expect(openOn(source.path)).to.equal(1);
    a!.release();
    await until(() => openOn(source.path) === 0);
    await files.close();
  });

  it('refuses a path that names another file than the verified one, or none (the caller copies the bytes it has)', async () => {
    const source = write('replaced', new Uint8Array(64).fill(1));
    // Written anew under the same name and size, as an edge that evicted and stored the key again would.
    writeFileSync(join(dir, 'replaced.tmp'), new Uint8Array(64).fill(2));
    renameSync(join(dir, 'replaced.tmp'), source.path);
    const files = new BlockFiles(30);
    expect(await files.acquire(source)).to.equal(null);
    expect(await files.acquire({ path: join(dir, 'missing'), identity: source.identity, position: 0, length: 1 })).to.equal(null);
    expect(openOn(source.path)).to.equal(0);
    await files.close();
  });

  it('a read past the end of the file says so instead of filling part of the block', async () => {
    const source = write('short', new Uint8Array(100).fill(3));
    const files = new BlockFiles(30);
    const held = await files.acquire(source);
    expect(await readInto(held!, new Uint8Array(64), 64)).to.equal(false);
    held!.release();
    await files.close();
  });
});
