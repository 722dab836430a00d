/**
 * tools/gpu/profile-projection-fusions.ts on the tiny shape, every product split in two over K: every side timed at
 * every row count asked for, and its timed submissions show what each side records: seven projection matmuls and
 * seven reductions per layer part by part and four of each stacked, each with a norm pass, and fused four matmuls,
 * three reductions and the output projection's reduction doing the norm.
 */
import { expect } from 'chai';
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';

const ROOT = join(import.meta.dirname, '..', '..');
const TOOL = join(ROOT, 'tools', 'gpu', 'profile-projection-fusions.ts');

interface Kernels {
  kernels: { kernel: string; count: number }[];
}

/**
 * Dispatches of matmul kernels in a side's timed submission: the products, or (`reductions`) their split-K sums, the
 * output projection's add-and-norm among them.
 */
function matmuls(side: Kernels, reductions = false): number {
  return side.kernels
    .filter((k) => /^mat(mul|vec)/.test(k.kernel) && /-reduce|-add-norm/.test(k.kernel) === reductions)
    .reduce((n, k) => n + k.count, 0);
}

/** Dispatches of kernels named `name` in a side's timed submission. */
function count(side: Kernels, name: string): number {
  return side.kernels.filter((k) => k.kernel.split(' ')[0] === name).reduce((n, k) => n + k.count, 0);
}

describe('tools/gpu/profile-projection-fusions.ts', () => {
  it('times part by part, stacked and fused projections at each row count: seven matmuls a layer, four, and four with the norm in a reduction', async function () {
    this.timeout(120_000);
    let stdout: string;
    try {
      ({ stdout } = await promisify(execFile)(
        process.execPath,
        ['--import', 'tsx', TOOL, '--shape', 'tiny', '--rows', '64,3', '--rounds', '1', '--warm-seconds', '0', '--k-parts', '2'],
        { cwd: ROOT },
      ));
    } catch (err) {
      if (!String((err as { stderr?: string }).stderr).includes('No WebGPU adapter') || process.env.CI === 'true') throw err;
      this.skip();
    }
    const report = JSON.parse(stdout);
    expect(report.results.map((r: { rows: number }) => r.rows)).to.deep.equal([64, 3]);
    for (const r of report.results) {
      for (const side of ['separate', 'stacked', 'fused']) {
        expect(r.totalMs[side].median).to.be.greaterThan(0);
        expect(r.submittedToDoneMs[side].median).to.be.at.most(r.totalMs[side].max);
      }
      if (r.kernels.separate === undefined) continue;
      expect(matmuls(r.kernels.separate)).to.equal(7 * report.layers);
      expect(matmuls(r.kernels.separate, true)).to.equal(7 * report.layers);
      expect(matmuls(r.kernels.stacked)).to.equal(4 * report.layers);
      expect(matmuls(r.kernels.stacked, true)).to.equal(4 * report.layers);
      expect(matmuls(r.kernels.fused)).to.equal(4 * report.layers);
      expect(matmuls(r.kernels.fused, true)).to.equal(4 * report.layers);
      expect(count(r.kernels.fused, 'matmul-add-norm')).to.equal(report.layers);
      for (const side of ['separate', 'stacked']) expect(count(r.kernels[side], 'rmsnorm')).to.equal(report.layers);
      expect(count(r.kernels.fused, 'rmsnorm')).to.equal(0);
    }
  });
});
