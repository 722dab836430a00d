/**
 * tools/gpu/dawn-call-counts.ts as a preload: a process that records eight dispatches of one kernel over the same
 * buffers (two recordings) leaves a file per thread counting those Dawn calls, one bind group among them, the
 * external memory a mapped upload added, and its collections.
 */
import { expect } from 'chai';
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { promisify } from 'node:util';

const ROOT = join(import.meta.dirname, '..', '..');
const TOOL = join(ROOT, 'tools', 'gpu', 'dawn-call-counts.ts');
const url = (path: string): string => pathToFileURL(join(ROOT, path)).href;

const SCRIPT = `
import { openDevice } from '${url('engine-adapter/webgpu/device.ts')}';
import { GpuContext } from '${url('engine-adapter/webgpu/gpu-context.ts')}';
import { recordAdd } from '${url('engine-adapter/webgpu/kernels/add.ts')}';
let ctx;
try { ctx = new GpuContext(await openDevice()); } catch (err) { console.log('NO-ADAPTER ' + err.message); process.exit(0); }
const x = ctx.upload(new Float32Array(1 << 18), 'x');
const y = ctx.upload(new Float32Array(1 << 18), 'y');
for (const n of [3, 5]) {
  const rec = ctx.recorder();
  for (let i = 0; i < n; i++) recordAdd(ctx, rec, { x, y, count: 1 << 18 });
  await rec.submit();
}
ctx.dispose();
`;

describe('tools/gpu/dawn-call-counts.ts', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'kdn-dawn-calls-'));
  });
  after(() => rm(dir, { recursive: true, force: true }));

  it("counts a thread's Dawn calls, the external memory they added and its collections", async function () {
    this.timeout(60_000);
    const { stdout } = await promisify(execFile)(
      process.execPath,
      ['--import', 'tsx', '--import', pathToFileURL(TOOL).href, '--input-type=module', '-e', SCRIPT],
      { cwd: ROOT, env: { ...process.env, DAWN_CALLS_DIR: dir } },
    );
    if (stdout.startsWith('NO-ADAPTER')) {
      if (process.env.CI === 'true') throw new Error(stdout);
      this.skip();
    }
    const files = await readdir(dir);
    expect(files).to.have.length(1);
    const report = JSON.parse(await readFile(join(dir, files[0]!), 'utf8'));
    expect(report.threadId).to.equal(0);
    expect(report.calls['GPUComputePassEncoder.dispatchWorkgroups'].calls).to.equal(8);
    expect(report.calls['GPUDevice.createBindGroup'].calls, 'one bind group for every slot').to.equal(1);
    expect(report.calls['GPUQueue.submit'].calls).to.be.at.least(2);
    // Each upload maps 1 MiB at creation: its range counts as external memory until unmapped.
    expect(report.calls['GPUBuffer.getMappedRange'].externalMiB).to.be.within(2, 2.1);
    expect(report.gcs).to.be.an('object');
    expect(report.series).to.be.an('array');
  });
});
