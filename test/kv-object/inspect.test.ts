import { spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import { codecFromString, encodeKVObject } from '../../storage/kv-object/index.ts';
import { kvTensors, tokenIds } from '../../fixtures/kv-data.ts';

function kdn(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['bin/kdn.js', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => { stdout += d.toString(); });
    child.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
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
    const json = JSON.parse(r.stdout.slice(0, r.stdout.lastIndexOf('}') + 1)) as { bytes: number; header: Record<string, unknown> };
    expect(json.bytes).to.equal(good.length);
    expect(json.header).to.include({ modelFingerprint: 'fp-123', layers: 2, tokens: 20 });
    expect(json.header.codec).to.deep.equal({ name: 'int8', lz4: true, groupSize: 32 });
    expect(r.stdout).to.match(/checksum ok: 2 layers verified/);
  });

  it('exits non-zero with KV_CORRUPT on a corrupted object', async () => {
    const r = await kdn(['inspect', join(dir, 'bad.kv')]);
    expect(r.code).to.not.equal(0);
    expect(r.stderr).to.match(/KV_CORRUPT: .*layer 1 checksum mismatch/);
  });

  it('exits non-zero with a clear message on a missing file', async () => {
    const r = await kdn(['inspect', join(dir, 'nope.kv')]);
    expect(r.code).to.not.equal(0);
    expect(r.stderr).to.match(/NOT_FOUND: cannot read .*nope\.kv/);
  });
});
