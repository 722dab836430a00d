/**
 * Benchmark runner: `npm run bench -- <name> [args] [--out <file>]` imports bench/<name>.ts, calls its run(args) and
 * writes bench/results/<file>.json (default <name>.json; atomically) with the host it ran on. A benchmark may
 * checkpoint its records as it goes: the file then holds them with "partial": true until it finishes. Every file names
 * the commit it measured.
 */
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, rename, writeFile } from 'node:fs/promises';
import { cpus, platform, arch } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import type { BenchModule, BenchReport, BenchResultFile } from './report.ts';

const BENCH_DIR = dirname(fileURLToPath(import.meta.url));
const NOT_BENCHMARKS = new Set(['run', 'report']);

/** The commit the run measures, and whether tracked files outside bench/results/ differ from it. */
function sourceRevision(): Pick<BenchResultFile, 'commit' | 'uncommittedChanges'> {
  const git = (...args: string[]): string =>
    execFileSync('git', args, { cwd: BENCH_DIR, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  try {
    const commit = git('rev-parse', 'HEAD');
    const changed = git('status', '--porcelain', '--untracked-files=no', '--', '..', ':(exclude)results');
    return changed ? { commit, uncommittedChanges: true } : { commit };
  } catch {
    return { commit: null };
  }
}

async function main(): Promise<void> {
  const [name, ...rest] = process.argv.slice(2);
  // `--out <file>` names the results file (e.g. ttft-gpu) when one benchmark writes several; it is not passed on.
  const outAt = rest.indexOf('--out');
  const outName = outAt === -1 ? name : rest[outAt + 1];
  const args = outAt === -1 ? rest : [...rest.slice(0, outAt), ...rest.slice(outAt + 2)];
  if (!name || !/^[a-z0-9][a-z0-9-]*$/.test(name) || NOT_BENCHMARKS.has(name)) {
    throw new Error('usage: npm run bench -- <name> [args]  (runs bench/<name>.ts)');
  }
  if (!outName || !/^[a-z0-9][a-z0-9-]*$/.test(outName)) throw new Error('--out needs a results name like ttft-gpu');
  const file = join(BENCH_DIR, `${name}.ts`);
  if (!existsSync(file)) throw new Error(`no benchmark bench/${name}.ts`);
  const mod = (await import(pathToFileURL(file).href)) as Partial<BenchModule>;
  if (typeof mod.run !== 'function') throw new Error(`bench/${name}.ts does not export run(args)`);
  const out = join(BENCH_DIR, 'results', `${outName}.json`);
  await mkdir(dirname(out), { recursive: true });
  const revision = sourceRevision();
  const save = async (report: BenchReport, partial: boolean): Promise<void> => {
    const result: BenchResultFile = {
      name,
      ...(partial ? { partial } : {}),
      command: ['npm run bench --', name, ...rest].join(' '),
      ...revision,
      date: new Date().toISOString(),
      host: {
        cpus: cpus()[0]?.model ?? 'unknown',
        cpuCount: cpus().length,
        node: process.version,
        platform: `${platform()}-${arch()}`,
        uvThreadpoolSize: process.env.UV_THREADPOOL_SIZE ?? null,
      },
      ...report,
    };
    await writeFile(`${out}.tmp`, `${JSON.stringify(result, null, 2)}\n`);
    await rename(`${out}.tmp`, out);
  };
  const report = await mod.run(args, (partial) => save(partial, true));
  await save(report, false);
  console.table(report.records);
  console.log(`wrote ${out}`);
}

main().catch((err: unknown) => {
  console.error(err instanceof Error ? err.message : String(err));
  process.exitCode = 1;
});
