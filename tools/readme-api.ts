/**
 * Writes README.md's API list from the route table (kdn/api/route-table.ts), between its two marker lines:
 *
 *   node --import tsx tools/readme-api.ts           rewrite the list in README.md
 *   node --import tsx tools/readme-api.ts --check   exit 1 if the list differs from the table
 *
 * test/kdn/route-table.test.ts fails while the README's list and the table differ.
 */
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { ROUTES } from '../kdn/api/route-table.ts';

export const README = resolve(dirname(fileURLToPath(import.meta.url)), '..', 'README.md');
export const REGENERATE = 'node --import tsx tools/readme-api.ts';
const BEGIN = '<!-- api-routes: generated from kdn/api/route-table.ts';
const END = '<!-- /api-routes -->';

/** The list as README.md shows it, marker lines included. */
export function apiList(): string {
  const rows = ROUTES.map((route) => `| \`${route.method}\` | \`${route.path}\` | ${route.description.replaceAll('|', '\\|')} |`);
  return [
    `${BEGIN} by \`${REGENERATE}\`; edit the table, not this list -->`,
    '| Method | Path | What it does |',
    '|---|---|---|',
    ...rows,
    END,
  ].join('\n');
}

/** `readme` with its list replaced by the table's; throws if the markers are missing. */
export function withApiList(readme: string): string {
  const begin = readme.indexOf(BEGIN);
  const end = readme.indexOf(END, begin);
  if (begin < 0 || end < 0) throw new Error(`README.md has no "${BEGIN}" ... "${END}" block`);
  return readme.slice(0, begin) + apiList() + readme.slice(end + END.length);
}

function main(): void {
  const readme = readFileSync(README, 'utf8');
  const updated = withApiList(readme);
  if (process.argv.includes('--check')) {
    if (updated !== readme) {
      process.stderr.write(`README.md's API list differs from kdn/api/route-table.ts: run ${REGENERATE}\n`);
      process.exit(1);
    }
    return;
  }
  if (updated === readme) return;
  // Written beside and renamed over, so an interrupted run never leaves half a README.
  const temporary = join(dirname(README), '.README.md.tmp');
  writeFileSync(temporary, updated);
  renameSync(temporary, README);
}

if (process.argv[1] && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) main();
