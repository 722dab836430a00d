import { spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import { codecFromString, encodeKVObject, fitTransformTable, transformTables } from '../../storage/kv-object/index.ts';
import { transformTableKey } from '../../storage/keys.ts';
import { openStore } from '../../storage/open-store.ts';
import { kvTensors, tokenIds } from '../../fixtures/kv-data.ts';

function kdn(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['bin/kdn.js', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => {
      stdout += d.toString();
    });
    child.stderr.on('data', (d: Buffer) => {
      stderr += d.toString();
    });
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

describe('kdn inspect', () => {
  let dir: string;
  let good: Buffer;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'kdn-inspect-'));
    const shape = { layers: 2, kvHeads: 2, headDim: 8, tokens: 20 };
    good = encodeKVObject(kvTensors(shape), { modelFingerprint: 'fp-123', tokenIds: tokenIds(20), codec: codecFromString('int8+lz4') });
    await writeFile(join(dir, 'good.kv'), good);
    const bad = Buffer.from(good);
    bad[bad.length - 5]! ^= 0x40;
    await writeFile(join(dir, 'bad.kv'), bad);
  });

  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('prints the header as JSON and confirms the checksums of a good object', async () => {
    const r = await kdn(['inspect', join(dir, 'good.kv')]);
    expect(r.code, r.stderr).to.equal(0);
    const json = JSON.parse(r.stdout.slice(0, r.stdout.lastIndexOf('}') + 1)) as {
      bytes: number;
      format: Record<string, unknown>;
      header: Record<string, unknown>;
    };
    expect(json.bytes).to.equal(good.length);
    expect(json.format).to.deep.equal({ version: 2, layerChecksums: 'blake3' });
    expect(json.header).to.include({ modelFingerprint: 'fp-123', layers: 2, tokens: 20 });
    expect(json.header.codec).to.deep.equal({ name: 'int8', lz4: true, groupSize: 32 });
    expect(r.stdout).to.match(/checksum ok: 2 layers verified/);
  });

  it('exits non-zero with KV_CORRUPT on a corrupted object', async () => {
    const r = await kdn(['inspect', join(dir, 'bad.kv')]);
    expect(r.code).to.not.equal(0);
    expect(r.stderr).to.match(/KV_CORRUPT: .*layer 1 checksum mismatch/);
  });

  it("shows a transform object's level and size vs fp16, checked against its table from a file or an origin", async () => {
    const shape = { layers: 2, kvHeads: 2, headDim: 16, tokens: 20 };
    const sample = { ...kvTensors({ ...shape, tokens: 100 }, 3), ropeApplied: false };
    const table = transformTables.register(fitTransformTable([sample], 'fp-t'));
    const object = encodeKVObject(
      { ...kvTensors(shape, 4), ropeApplied: false },
      {
        modelFingerprint: 'fp-t',
        tokenIds: tokenIds(20),
        codec: { name: 'transform', lz4: false, table: table.hash, level: 4 },
      },
    );
    await writeFile(join(dir, 't.kv'), object);
    await writeFile(join(dir, 't.ktt'), table.bytes);
    const origin = openStore(`file:${join(dir, 'origin')}`);
    await origin.put(transformTableKey('fp-t', table.hash), table.bytes);
    await origin.close();
    const payload = object.length - (42 + object.readUInt32LE(6));
    for (const args of [
      ['--table', join(dir, 't.ktt')],
      ['--origin', `file:${join(dir, 'origin')}`],
    ]) {
      const r = await kdn(['inspect', join(dir, 't.kv'), ...args]);
      expect(r.code, r.stderr).to.equal(0);
      const json = JSON.parse(r.stdout.slice(0, r.stdout.lastIndexOf('}') + 1)) as { codec: Record<string, unknown> };
      expect(json.codec).to.include({
        label: 'transform:x16',
        level: 'x16',
        ratioVsFp16: Number((payload / (4 * 2 * 20 * 2 * 16)).toFixed(4)),
      });
      expect(json.codec.ratioVsFp16).to.be.within(1 / 16 - 0.01, 1 / 16 + 0.02);
      expect(r.stdout).to.match(/checksum ok: 2 layers verified/);
    }
    const without = await kdn(['inspect', join(dir, 't.kv')]);
    expect(without.code, without.stderr).to.equal(0);
    expect(without.stdout).to.match(/not loaded/);
    expect(JSON.parse(without.stdout.slice(0, without.stdout.lastIndexOf('}') + 1)).codec).to.include({
      label: 'transform:x16',
      level: 'x16',
    });
    const wrong = fitTransformTable([{ ...kvTensors({ ...shape, tokens: 100 }, 9), ropeApplied: false }], 'fp-t');
    await writeFile(join(dir, 'wrong.ktt'), wrong.bytes);
    const mismatch = await kdn(['inspect', join(dir, 't.kv'), '--table', join(dir, 'wrong.ktt')]);
    expect(mismatch.code).to.not.equal(0);
    expect(mismatch.stderr).to.match(/KV_MISMATCH/);
  });

  it('exits non-zero with a clear message on a missing file', async () => {
    const r = await kdn(['inspect', join(dir, 'nope.kv')]);
    expect(r.code).to.not.equal(0);
    expect(r.stderr).to.match(/NOT_FOUND: cannot read .*nope\.kv/);
  });
});
