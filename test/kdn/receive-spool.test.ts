import { expect } from 'chai';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ReceiveSpool } from '../../kdn/query/receive-spool.ts';
import { readBlockSource } from '../../storage/kv-object/index.ts';

/** The spool a fetch thread writes routed blocks into, for the engine's thread to read back (receive-spool.ts). */
describe('receive spool', () => {
  let dir: string;

  before(async function () {
    // The engine's thread opens a spool file by its descriptor's path, which only Linux has.
    if (!existsSync('/proc/self/fd')) this.skip();
    dir = await mkdtemp(join(tmpdir(), 'kdn-spool-'));
  });

  after(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  const bytesOf = (length: number, seed: number): Uint8Array => Uint8Array.from({ length }, (_, i) => (i * 31 + seed) & 0xff);

  it('gives back every block written, by its source, while later blocks are appended to the same file', () => {
    const spool = ReceiveSpool.at(dir, 1 << 20)!;
    const file = spool.open()!;
    const blocks = [bytesOf(1000, 1), bytesOf(70_000, 2), bytesOf(3, 3)];
    const sources = blocks.map((b) => file.write(b)!);
    expect(sources.map((s) => s.position)).to.deep.equal([0, 1000, 71_000]);
    // The identity a reader checks holds across the appends: every block reads back, the first one too.
    expect(new Set(sources.map((s) => s.identity)).size).to.equal(1);
    for (const [i, source] of sources.entries()) expect(Buffer.from(readBlockSource(source))).to.deep.equal(Buffer.from(blocks[i]!));
    // Nobody else finds it: the name is gone as soon as the file is open.
    expect(readdirSync(dir)).to.deep.equal([]);
    expect(existsSync(sources[0]!.path)).to.equal(false);
    file.close();
    expect(() => readBlockSource(sources[0]!))
      .to.throw()
      .with.property('code', 'EDGE_UNAVAILABLE');
  });

  it('holds at most its bound in open files, and what a closed file held counts no more', () => {
    const spool = ReceiveSpool.at(dir, 10_000)!;
    const a = spool.open()!;
    const b = spool.open()!;
    expect(a.write(bytesOf(6_000, 1))).to.not.equal(undefined);
    // Past the bound the block goes with its bytes (undefined), in this file and in any other.
    expect(b.write(bytesOf(6_000, 2))).to.equal(undefined);
    expect(b.write(bytesOf(4_000, 3))).to.not.equal(undefined);
    expect(a.write(bytesOf(1, 4))).to.equal(undefined);
    a.close();
    expect(b.write(bytesOf(6_000, 5))).to.not.equal(undefined);
    b.close();
    // Blocks that go with their bytes are counted by whoever sends them (BlockOutlet), not by the file.
    expect(spool.stats).to.deep.equal({ spooledBytes: 16_000, sentBytes: 0, failures: 0 });
  });

  it('is none without bytes or a folder, and opens none where its files cannot be made', async () => {
    expect(ReceiveSpool.at(dir, 0)).to.equal(undefined);
    expect(ReceiveSpool.at(join(dir, 'missing'), 1 << 20)).to.equal(undefined);
    const notADir = join(dir, 'plain-file');
    await writeFile(notADir, 'x');
    const spool = ReceiveSpool.at(notADir, 1 << 20)!;
    expect(spool.open()).to.equal(undefined);
    expect(statSync(notADir).size).to.equal(1);
    // After a failure no file is tried for a while (the folder is likely full).
    expect(spool.open()).to.equal(undefined);
    expect(spool.stats.failures).to.equal(1);
  });
});
