/**
 * tools/gpu/dawn-call-counts.mjs as a preload: a process that records eight dispatches of one kernel over the same
 * buffers (two recordings) leaves a file per thread counting those Dawn calls, one bind group among them, the time
 * they took, the external memory a mapped upload added, and its collections; a worker thread that creates a buffer
 * starts under it and leaves a file of its own.
 */
import { expect } from 'chai';
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { promisify } from 'node:util';

const ROOT = join(import.meta.dirname, '..', '..');
const TOOL = join(ROOT, 'tools', 'gpu', 'dawn-call-counts.mjs');
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
const { Worker } = await import('node:worker_threads');
const inWorker = \`
  const { createRequire } = await import('node:module');
  const { create } = createRequire(${JSON.stringify(`${ROOT}/`)})('webgpu');
  const device = await (await create([]).requestAdapter()).requestDevice();
  device.createBuffer({ size: 256, usage: 8 }).destroy();
  device.destroy();
\`;
await new Promise((resolve, reject) => {
  const worker = new Worker(new URL('data:text/javascript,' + encodeURIComponent(inWorker)));
  worker.on('error', reject);
  worker.on('exit', (code) => (code === 0 ? resolve() : reject(new Error('worker exited with ' + code))));
});
`;

describe('tools/gpu/dawn-call-counts.mjs', () => {
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
    const reports = await Promise.all((await readdir(dir)).map(async (f) => JSON.parse(await readFile(join(dir, f), 'utf8'))));
    // The worker's thread id depends on the threads started before it (tsx's loader has one).
    expect(reports).to.have.length(2);
    const report = reports.find((r) => r.threadId === 0);
    const worker = reports.find((r) => r.threadId !== 0);
    expect(worker.calls['GPUDevice.createBuffer'].calls).to.equal(1);
    expect(report.calls['GPUComputePassEncoder.dispatchWorkgroups'].calls).to.equal(8);
    expect(report.calls['GPUDevice.createBindGroup'].calls, 'one bind group for every slot').to.equal(1);
    expect(report.calls['GPUQueue.submit'].calls).to.be.at.least(2);
    expect(report.calls['GPUQueue.submit'].ms).to.be.greaterThan(0);
    // Each upload maps 1 MiB at creation: its range counts as external memory until unmapped.
    expect(report.calls['GPUBuffer.getMappedRange'].externalMiB).to.be.within(2, 2.1);
    expect(report.gcs).to.be.an('object');
    expect(report.series).to.be.an('array');
  });
});
