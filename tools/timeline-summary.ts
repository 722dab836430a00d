/**
 * Summarizes the engine timelines a `bench/run.ts ttft --timeline FILE` run wrote: one row per measured query (first
 * layer placed, all placed, logits, the question's tail after placing, how far the GPU fell behind, uploads and
 * reads, how long layers waited after their blocks arrived; bench/lib/timeline-summary.ts), as a table, or JSON with
 * --json. FILE may be gzipped.
 *   node --import tsx tools/timeline-summary.ts FILE [FILE ...] [--json]
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { gunzipSync } from 'node:zlib';
import type { TimelineEntry } from '../bench/lib/timeline-file.ts';
import { summarizeTimelines, type TimelineSummary } from '../bench/lib/timeline-summary.ts';

function read(file: string): TimelineEntry[] {
  const raw = readFileSync(file);
  const text = file.endsWith('.gz') ? gunzipSync(raw).toString('utf8') : raw.toString('utf8');
  const parsed = JSON.parse(text) as { entries?: TimelineEntry[] };
  if (!Array.isArray(parsed.entries)) throw new Error(`${file} is not a ttft --timeline file (no "entries")`);
  return parsed.entries;
}

const { values, positionals } = parseArgs({ allowPositionals: true, options: { json: { type: 'boolean' } } });
if (positionals.length === 0) {
  process.stderr.write('usage: timeline-summary.ts FILE [FILE ...] [--json]\n');
  process.exit(2);
}
const rows: (TimelineSummary & { file: string })[] = [];
try {
  for (const file of positionals) for (const row of summarizeTimelines(read(file))) rows.push({ file, ...row });
} catch (err) {
  process.stderr.write(`timeline-summary: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
}
if (values.json) process.stdout.write(`${JSON.stringify(rows, null, 1)}\n`);
else console.table(rows);
