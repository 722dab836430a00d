/**
 * Collects the figures the fault tests (test/faults/) measure into bench/results/faults.json.
 *
 * Each fault test writes `<fault>.json` into a results directory; mergeFaultFigures() folds them into the results
 * file. The file always has every fault of FAULTS, in that order, so its structure does not depend on which tests
 * ran: a fault that did not run this time keeps its previous figures (or null). Run by hand as
 *   node --import tsx bench/faults-report.ts <results-dir> [out-file]
 */
import { mkdir, readdir, readFile, rename, writeFile } from 'node:fs/promises';
import { cpus } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const FAULTS = ['corruption', 'edgeLoss', 'originLoss', 'crashIngest', 'badInput', 'load'] as const;
export type FaultName = (typeof FAULTS)[number];

export type FigureValue = string | number | boolean | null;
export type Figures = Record<string, FigureValue>;

export interface FaultEntry {
  recordedAt: string;
  figures: Figures;
}

export interface FaultsReport {
  name: 'faults';
  command: string;
  host: { cpus: string; cpuCount: number; node: string; platform: string };
  faults: Record<FaultName, FaultEntry | null>;
}

export const DEFAULT_REPORT = resolve(dirname(fileURLToPath(import.meta.url)), 'results', 'faults.json');

export function isFaultName(name: string): name is FaultName {
  return (FAULTS as readonly string[]).includes(name);
}

/** Merges `<resultsDir>/<fault>.json` files into `outFile` (written atomically); returns what was written. */
export async function mergeFaultFigures(resultsDir: string, outFile: string = DEFAULT_REPORT): Promise<FaultsReport> {
  const previous = await readReport(outFile);
  const faults = Object.fromEntries(FAULTS.map((name) => [name, previous?.faults[name] ?? null])) as Record<FaultName, FaultEntry | null>;
  const names = await readdir(resultsDir).catch(() => [] as string[]);
  for (const file of names.sort()) {
    const name = file.replace(/\.json$/, '');
    if (!file.endsWith('.json') || !isFaultName(name)) continue;
    faults[name] = JSON.parse(await readFile(join(resultsDir, file), 'utf8')) as FaultEntry;
  }
  const cpu = cpus();
  const report: FaultsReport = {
    name: 'faults',
    command: 'npx mocha test/faults/*.test.ts',
    host: { cpus: cpu[0]?.model ?? 'unknown', cpuCount: cpu.length, node: process.version, platform: `${process.platform}-${process.arch}` },
    faults,
  };
  await mkdir(dirname(outFile), { recursive: true });
  const temp = `${outFile}.${process.pid}.tmp`;
  await writeFile(temp, `${JSON.stringify(report, null, 2)}\n`);
  await rename(temp, outFile);
  return report;
}

async function readReport(file: string): Promise<FaultsReport | undefined> {
  try {
    const parsed = JSON.parse(await readFile(file, 'utf8')) as Partial<FaultsReport>;
    return parsed.faults ? (parsed as FaultsReport) : undefined;
  } catch {
    return undefined;
  }
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const [dir, out] = process.argv.slice(2);
  if (!dir) {
    process.stderr.write('usage: node --import tsx bench/faults-report.ts <results-dir> [out-file]\n');
    process.exit(2);
  }
  const report = await mergeFaultFigures(dir, out ?? DEFAULT_REPORT);
  process.stdout.write(`${JSON.stringify(report.faults)}\n`);
}
