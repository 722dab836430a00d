import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { FIGURES_DIR_ENV, type FaultName, type Figures } from '../../../bench/faults.ts';

/**
 * Prints a fault's figures as one JSON line. Under `npm run bench -- faults`, which names a temporary folder in
 * KDN_FAULT_FIGURES, it also leaves them there for the benchmark's report; a plain test run writes no file.
 */
export function recordFigures(fault: FaultName, figures: Figures): void {
  console.log(`      ${JSON.stringify({ fault, ...figures })}`);
  const dir = process.env[FIGURES_DIR_ENV];
  if (dir) writeFileSync(join(dir, `${fault}.json`), JSON.stringify(figures));
}
