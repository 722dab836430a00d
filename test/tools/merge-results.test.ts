import { expect } from 'chai';
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

const TOOL = join(import.meta.dirname, '..', '..', 'tools', 'gpu', 'merge-results.ts');
const HEAD = 'a'.repeat(40);
const BASE = 'b'.repeat(40);

/** A bench/run.ts results file, as measure.sh leaves it in its folder. */
function runFile(commit: string, records: object[], extra: object = {}): object {
  return {
    name: 'ttft',
    command: 'ttft --runs 1',
    commit,
    date: '2026-12-05T00:00:00.000Z',
    host: { cpus: 'x' },
    params: {},
    records,
    ...extra,
  };
}

/** Runs the tool as measure.sh's `merge` part does; resolves with its exit code and output. */
async function merge(args: string[]): Promise<{ code: number; out: string }> {
  try {
    const { stdout, stderr } = await promisify(execFile)(process.execPath, ['--import', 'tsx', TOOL, ...args]);
    return { code: 0, out: stdout + stderr };
  } catch (err) {
    const failed = err as { code: number; stdout: string; stderr: string };
    return { code: failed.code, out: failed.stdout + failed.stderr };
  }
}

describe('tools/gpu/merge-results.ts', function () {
  this.timeout(30_000);
  let folder: string;
  let results: string;

  beforeEach(async () => {
    folder = await mkdtemp(join(tmpdir(), 'kdn-merge-in-'));
    results = await mkdtemp(join(tmpdir(), 'kdn-merge-out-'));
  });

  afterEach(async () => {
    await rm(folder, { recursive: true, force: true });
    await rm(results, { recursive: true, force: true });
  });

  const put = (name: string, value: object): Promise<void> => writeFile(join(folder, name), JSON.stringify(value));
  const merged = async (name: string): Promise<Record<string, unknown>> => JSON.parse(await readFile(join(results, name), 'utf8'));

  it("merges one benchmark's runs into one file with every run's records and the folder's commit", async () => {
    await put('source.json', { commit: HEAD, uncommittedChanges: false });
    await put('ttft-gpu-8b.json', runFile(HEAD, [{ mode: 'inject', context: 1024 }]));
    await put(
      'ttft-gpu-1b.json',
      runFile(HEAD, [
        { mode: 'peer', context: 1024 },
        { mode: 'inject', context: 4096 },
      ]),
    );
    await put('profile-forward-8b.json', { shape: '8b', kernels: [1, 2] });
    const { code, out } = await merge([folder, '--results', results]);
    expect(code, out).to.equal(0);
    const ttft = await merged('ttft-gpu.json');
    expect(ttft).to.include({ name: 'ttft', commit: HEAD });
    expect(ttft).not.to.have.property('uncommittedChanges');
    // Files are read in name order: the 1B run first.
    expect(ttft.records).to.deep.equal([
      { mode: 'peer', context: 1024 },
      { mode: 'inject', context: 4096 },
      { mode: 'inject', context: 1024 },
    ]);
    expect(ttft.runs).to.have.length(2);
    expect(await merged(join('gpu', 'profile-forward.json'))).to.deep.equal({
      name: 'profile-forward',
      commit: HEAD,
      shapes: [{ shape: '8b', kernels: [1, 2] }],
    });
    expect((await readdir(results)).sort()).to.deep.equal(['gpu', 'ttft-gpu.json']);
  });

  it('refuses a partial run, a run of another commit and an empty folder, writing nothing', async () => {
    await put('source.json', { commit: HEAD, uncommittedChanges: false });
    // Good runs beside a bad one are not written either: the results stay as they were.
    await put('ttft-gpu-8b.json', runFile(HEAD, [{ mode: 'inject' }]));
    await put('engine-gpu-8b.json', runFile(HEAD, [], { partial: true }));
    let got = await merge([folder, '--results', results]);
    expect(got.code).to.equal(1);
    expect(got.out).to.match(/engine-gpu-8b\.json is partial/);

    await put('engine-gpu-8b.json', runFile(BASE, []));
    got = await merge([folder, '--results', results]);
    expect(got.code).to.equal(1);
    expect(got.out).to.contain(`measured ${BASE}, not ${HEAD}`);

    await rm(join(folder, 'engine-gpu-8b.json'));
    await rm(join(folder, 'ttft-gpu-8b.json'));
    got = await merge([folder, '--results', results]);
    expect(got.code).to.equal(1);
    expect(got.out).to.match(/nothing to merge/);
    expect(await readdir(results)).to.deep.equal([]);
  });

  it('refuses a folder without source.json and unknown arguments, with the usage', async () => {
    let got = await merge([folder, '--results', results]);
    expect(got.code).to.equal(1);
    expect(got.out).to.match(/has no source\.json[\s\S]*usage:/);
    got = await merge([folder, '--out', results]);
    expect(got.code).to.equal(1);
    expect(got.out).to.match(/^usage:/);
  });

  it("marks each A/B record with its side and that side's commit, taken from the file's name", async () => {
    await put('source.json', { commit: HEAD, uncommittedChanges: true });
    await put('ab-bases.json', { base1: BASE });
    await put('ttft-ab-1-this.json', runFile(HEAD, [{ mode: 'inject-int4', ms: 100 }]));
    await put('ttft-ab-2-base1.json', runFile(BASE, [{ mode: 'inject-int4', ms: 120 }]));
    const { code, out } = await merge([folder, '--results', results]);
    expect(code, out).to.equal(0);
    const ab = await merged('ttft-ab-http-gpu.json');
    expect(ab).to.include({ name: 'ttft-ab', commit: HEAD, uncommittedChanges: true });
    expect(ab.records).to.deep.equal([
      { side: 'this', commit: HEAD, uncommittedChanges: true, mode: 'inject-int4', ms: 100 },
      { side: 'base1', commit: BASE, mode: 'inject-int4', ms: 120 },
    ]);
  });

  it('names the A/B file by the path its runs took, and refuses runs that mix the fast path and sockets', async () => {
    await put('source.json', { commit: HEAD, uncommittedChanges: false });
    await put('ab-bases.json', { base1: BASE });
    await put('ttft-ab-1-this.json', runFile(HEAD, [], { command: 'ttft --edge-shm --runs 1' }));
    await put('ttft-ab-2-base1.json', runFile(BASE, [], { command: 'ttft --edge-shm --runs 1' }));
    let got = await merge([folder, '--results', results]);
    expect(got.code, got.out).to.equal(0);
    expect(await readdir(results)).to.deep.equal(['ttft-ab-shm-gpu.json']);

    await rm(join(results, 'ttft-ab-shm-gpu.json'));
    await put('ttft-ab-2-base1.json', runFile(BASE, []));
    got = await merge([folder, '--results', results]);
    expect(got.code).to.equal(1);
    expect(got.out).to.match(/mix the fast path \(--edge-shm\) and sockets/);
    expect(await readdir(results)).to.deep.equal([]);
  });

  it("refuses an A/B run whose commit is not its side's, and a base equal to an unchanged checkout", async () => {
    await put('source.json', { commit: HEAD, uncommittedChanges: false });
    await put('ab-bases.json', { base1: BASE });
    await put('ttft-ab-1-this.json', runFile(HEAD, []));
    await put('ttft-ab-2-base1.json', runFile(HEAD, []));
    let got = await merge([folder, '--results', results]);
    expect(got.code).to.equal(1);
    expect(got.out).to.contain(`ttft-ab-2-base1.json measured ${HEAD}, not base1's ${BASE}`);

    await put('ab-bases.json', { base1: HEAD });
    got = await merge([folder, '--results', results]);
    expect(got.code).to.equal(1);
    expect(got.out).to.match(/base1 is this checkout's own commit/);
    expect(await readdir(results)).to.deep.equal([]);
  });
});
