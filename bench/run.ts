/**
 * Benchmark runner: `npm run bench -- <name> [args]` imports bench/<name>.ts, calls its run(args) and writes
 * bench/results/<name>.json (atomically) with the host it ran on.
 */
import { existsSync } from 'node:fs';
import { mkdir, rename, writeFile } from 'node:fs/promises';
import { cpus, platform, arch } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import type { BenchModule, BenchResultFile } from './report.ts';

const BENCH_DIR = dirname(fileURLToPath(import.meta.url));
const NOT_BENCHMARKS = new Set(['run', 'report']);

async function main(): Promise<void> {
  const [name, ...args] = process.argv.slice(2);
  if (!name || !/^[a-z0-9][a-z0-9-]*$/.test(name) || NOT_BENCHMARKS.has(name)) {
    throw new Error('usage: npm run bench -- <name> [args]  (runs bench/<name>.ts)');
  }
  const file = join(BENCH_DIR, `${name}.ts`);
  if (!existsSync(file)) throw new Error(`no benchmark bench/${name}.ts`);
  const mod = (await import(pathToFileURL(file).href)) as Partial<BenchModule>;
  if (typeof mod.run !== 'function') throw new Error(`bench/${name}.ts does not export run(args)`);
  const report = await mod.run(args);
  const result: BenchResultFile = {
    name,
    command: ['npm run bench --', name, ...args].join(' '),
    date: new Date().toISOString(),
    host: { cpus: cpus()[0]?.model ?? 'unknown', cpuCount: cpus().length, node: process.version, platform: `${platform()}-${arch()}` },
    ...report,
  };
  const out = join(BENCH_DIR, 'results', `${name}.json`);
  await mkdir(dirname(out), { recursive: true });
  await writeFile(`${out}.tmp`, `${JSON.stringify(result, null, 2)}\n`);
  await rename(`${out}.tmp`, out);
  console.table(report.records);
  console.log(`wrote ${out}`);
}

main().catch((err: unknown) => {
  console.error(err instanceof Error ? err.message : String(err));
  process.exitCode = 1;
});
