import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { mergeFaultFigures, type FaultName, type Figures } from '../../../bench/faults-report.ts';

/** Where this mocha run's fault tests leave their figures until the root hook below merges them. */
const RESULTS_DIR = join(tmpdir(), `kdn-fault-figures-${process.pid}`);

/** Prints a fault's figures as one JSON line and keeps them for bench/results/faults.json. */
export function recordFigures(fault: FaultName, figures: Figures): void {
  console.log(`      ${JSON.stringify({ fault, ...figures })}`);
  mkdirSync(RESULTS_DIR, { recursive: true });
  writeFileSync(join(RESULTS_DIR, `${fault}.json`), JSON.stringify({ recordedAt: new Date().toISOString(), figures }));
}

// A root-level hook (this module is first imported while mocha loads a spec file): once every test has run, the
// figures of the faults that ran replace their entries in the results file.
after(async () => {
  await mergeFaultFigures(RESULTS_DIR);
  rmSync(RESULTS_DIR, { recursive: true, force: true });
});
