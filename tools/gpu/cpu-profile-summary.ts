/**
 * Where each thread's time went, from the .cpuprofile files `node --cpu-prof --cpu-prof-dir=DIR` writes (one per
 * thread): per profile, its span, and the functions with the most self time, as JSON on stdout. For hosts where
 * opening profiles in Chrome's DevTools is not at hand (docs/GPU.md, "Finding where host time goes").
 *   node --import tsx tools/gpu/cpu-profile-summary.ts DIR [--top 25]
 */
import { readdir, readFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { parseArgs } from 'node:util';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
}

interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

const { values, positionals } = parseArgs({ allowPositionals: true, options: { top: { type: 'string', default: '25' } } });
const dir = positionals[0];
if (!dir) {
  process.stderr.write('usage: cpu-profile-summary.ts DIR [--top N]\n');
  process.exit(2);
}
const top = Number(values.top);

function frameName(node: ProfileNode): string {
  const { functionName, url, lineNumber } = node.callFrame;
  const where = url ? `${basename(url)}:${lineNumber + 1}` : '';
  return [functionName || '(anonymous)', where].filter(Boolean).join(' ');
}

/** Self milliseconds per function (samples attributed to the node they hit, each weighted by its time delta). */
function summarize(profile: CpuProfile): { spanMs: number; selfMs: [string, number][] } {
  const byId = new Map(profile.nodes.map((n) => [n.id, frameName(n)]));
  const self = new Map<string, number>();
  for (const [i, id] of profile.samples.entries()) {
    const name = byId.get(id) ?? '(unknown)';
    self.set(name, (self.get(name) ?? 0) + (profile.timeDeltas[i] ?? 0) / 1000);
  }
  const selfMs = [...self.entries()].sort((a, b) => b[1] - a[1]).slice(0, top);
  return { spanMs: (profile.endTime - profile.startTime) / 1000, selfMs: selfMs.map(([n, ms]) => [n, Math.round(ms * 10) / 10]) };
}

const out: Record<string, ReturnType<typeof summarize>> = {};
for (const file of (await readdir(dir)).filter((f) => f.endsWith('.cpuprofile')).sort()) {
  out[file] = summarize(JSON.parse(await readFile(join(dir, file), 'utf8')) as CpuProfile);
}
console.log(JSON.stringify(out, null, 1));
