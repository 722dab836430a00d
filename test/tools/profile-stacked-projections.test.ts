/**
 * tools/gpu/profile-stacked-projections.ts on the tiny shape: both sides timed at every row count asked for, and its
 * timed submissions show what each side records: seven projection matmuls per layer against four.
 */
import { expect } from 'chai';
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';

const ROOT = join(import.meta.dirname, '..', '..');
const TOOL = join(ROOT, 'tools', 'gpu', 'profile-stacked-projections.ts');

interface Kernels {
  kernels: { kernel: string; count: number }[];
}

/** Matmul dispatches (split-K reductions aside) in a side's timed submission. */
function matmuls(side: Kernels): number {
  return side.kernels
    .filter((k) => /^mat(mul|vec)/.test(k.kernel) && !k.kernel.startsWith('matmul-split-reduce'))
    .reduce((n, k) => n + k.count, 0);
}

describe('tools/gpu/profile-stacked-projections.ts', () => {
  it('times separate and stacked projections at each row count, four matmuls a layer against seven', async function () {
    this.timeout(120_000);
    let stdout: string;
    try {
      ({ stdout } = await promisify(execFile)(
        process.execPath,
        ['--import', 'tsx', TOOL, '--shape', 'tiny', '--rows', '64,1', '--rounds', '1', '--warm-seconds', '0'],
        { cwd: ROOT },
      ));
    } catch (err) {
      if (!String((err as { stderr?: string }).stderr).includes('No WebGPU adapter') || process.env.CI === 'true') throw err;
      this.skip();
    }
    const report = JSON.parse(stdout);
    expect(report.results.map((r: { rows: number }) => r.rows)).to.deep.equal([64, 1]);
    for (const r of report.results) {
      for (const side of ['separate', 'stacked']) {
        expect(r.totalMs[side].median).to.be.greaterThan(0);
        expect(r.submittedToDoneMs[side].median).to.be.at.most(r.totalMs[side].max);
      }
      if (r.kernels.separate === undefined) continue;
      expect(matmuls(r.kernels.separate)).to.equal(7 * report.layers);
      expect(matmuls(r.kernels.stacked)).to.equal(4 * report.layers);
    }
  });
});
