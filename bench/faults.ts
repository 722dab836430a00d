/**
 * What the fault tests (test/faults/) measure while they break things on purpose: objects corrupted and caught, edges
 * and the origin lost mid-query, an ingest killed midway, 10,000 malformed requests, 32 clients for a minute (the
 * suite runs that one 20 s; KDN_FAULTS_LOAD_SECONDS sets it).
 * Runs those tests with mocha in a child process; each test leaves its figures as `<fault>.json` in the folder named
 * by KDN_FAULT_FIGURES (a temporary one here), and the report holds one record per fault that ran. The tests fail,
 * and so does this benchmark, when a fault is handled wrongly.
 *   npm run bench -- faults [--grep <mocha pattern> --out <name>]
 * With --grep only some faults run: --out writes their report beside faults.json instead of over it.
 */
import { spawn } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import type { BenchRecord, BenchReport, BenchValue } from './report.ts';

export const FAULTS = ['corruption', 'edgeLoss', 'originLoss', 'crashIngest', 'badInput', 'load'] as const;
export type FaultName = (typeof FAULTS)[number];
export type Figures = Record<string, BenchValue>;

/** The environment variable naming the folder the fault tests write their figures into; unset, they write none. */
export const FIGURES_DIR_ENV = 'KDN_FAULT_FIGURES';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');

function runMocha(files: string[], grep: string | undefined, figuresDir: string): Promise<void> {
  const args = [join(ROOT, 'node_modules', 'mocha', 'bin', 'mocha.js'), ...files, ...(grep ? ['--grep', grep] : [])];
  const env = { KDN_FAULTS_LOAD_SECONDS: '60', ...process.env, [FIGURES_DIR_ENV]: figuresDir };
  const child = spawn(process.execPath, args, { cwd: ROOT, env, stdio: ['ignore', 'inherit', 'inherit'] });
  return new Promise((resolve, reject) => {
    child.once('error', reject);
    child.once('exit', (code, signal) => {
      if (code === 0) resolve();
      else reject(new Error(`the fault tests failed (exit ${code ?? signal}): no report`));
    });
  });
}

export async function run(args: string[]): Promise<BenchReport> {
  const { values } = parseArgs({ args, options: { grep: { type: 'string' } } });
  const testDir = join(ROOT, 'test', 'faults');
  const files = (await readdir(testDir))
    .filter((name) => name.endsWith('.test.ts'))
    .sort()
    .map((name) => join('test', 'faults', name));
  const figuresDir = await mkdtemp(join(tmpdir(), 'kdn-fault-figures-'));
  try {
    await runMocha(files, values.grep, figuresDir);
    const records: BenchRecord[] = [];
    for (const fault of FAULTS) {
      const text = await readFile(join(figuresDir, `${fault}.json`), 'utf8').catch(() => undefined);
      if (text !== undefined) records.push({ fault, ...(JSON.parse(text) as Figures) });
    }
    return { params: { tests: 'test/faults/*.test.ts', grep: values.grep ?? null }, records };
  } finally {
    await rm(figuresDir, { recursive: true, force: true });
  }
}
