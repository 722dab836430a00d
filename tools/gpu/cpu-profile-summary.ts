/**
 * Where each thread's time went, from the .cpuprofile files `node --cpu-prof --cpu-prof-dir=DIR` writes (one per
 * thread): per profile, its span, and the functions with the most self time and the most total time (self and
 * callees), as JSON on stdout. For hosts where opening profiles in Chrome's DevTools is not at hand (docs/GPU.md,
 * "Finding where host time goes").
 *   node --import tsx tools/gpu/cpu-profile-summary.ts DIR [--top 25] [--during NAME[,NAME...]] [--gap 20]
 * `--during` keeps only the windows in which the thread ran the named functions: each window runs from the first to
 * the last sample with one of them on its stack, and a pause longer than `--gap` ms without one splits it. A
 * benchmark's set-up (weights, warm-up) then does not drown the part measured, e.g. `--during writeInLayerOrder` for
 * the engine's thread while it places an injected context.
 */
import { readdir, readFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { parseArgs } from 'node:util';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}

interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

interface Summary {
  spanMs: number;
  /** With --during: how many windows, and the milliseconds they cover. */
  windows?: { count: number; ms: number };
  selfMs: [string, number][];
  totalMs: [string, number][];
}

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: { top: { type: 'string', default: '25' }, during: { type: 'string' }, gap: { type: 'string', default: '20' } },
});
const dir = positionals[0];
if (!dir) {
  process.stderr.write('usage: cpu-profile-summary.ts DIR [--top N] [--during NAME[,NAME...]] [--gap MS]\n');
  process.exit(2);
}
const top = Number(values.top);
const during = values.during?.split(',') ?? [];
const gapUs = Number(values.gap) * 1000;

function frameName(node: ProfileNode): string {
  const { functionName, url, lineNumber } = node.callFrame;
  const where = url ? `${basename(url)}:${lineNumber + 1}` : '';
  return [functionName || '(anonymous)', where].filter(Boolean).join(' ');
}

/** Each node's frames from itself to the root, as names (a name once even where it recurses). */
function stacks(profile: CpuProfile): Map<number, string[]> {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const out = new Map<number, string[]>();
  for (const n of profile.nodes) {
    const names: string[] = [];
    for (let id: number | undefined = n.id; id !== undefined; id = parent.get(id)) {
      const name = frameName(byId.get(id)!);
      if (!names.includes(name)) names.push(name);
    }
    out.set(n.id, names);
  }
  return out;
}

/** Which samples to count: all, or those inside the windows the `during` functions mark. */
function selected(profile: CpuProfile, stackOf: Map<number, string[]>): { keep: boolean[]; windows?: Summary['windows'] } {
  if (during.length === 0) return { keep: profile.samples.map(() => true) };
  const at: number[] = [];
  let t = profile.startTime;
  for (const d of profile.timeDeltas) at.push((t += d));
  const marks = profile.samples.map((id) => stackOf.get(id)!.some((name) => during.some((d) => name.startsWith(`${d} `) || name === d)));
  const keep = profile.samples.map(() => false);
  let count = 0;
  let ms = 0;
  let start = -1;
  let last = -1;
  const close = (): void => {
    if (start === -1) return;
    for (let i = start; i <= last; i++) keep[i] = true;
    count++;
    ms += (at[last]! - at[start]!) / 1000;
  };
  for (let i = 0; i < marks.length; i++) {
    if (!marks[i]) continue;
    if (start !== -1 && at[i]! - at[last]! > gapUs) {
      close();
      start = -1;
    }
    if (start === -1) start = i;
    last = i;
  }
  close();
  return { keep, windows: { count, ms: Math.round(ms * 10) / 10 } };
}

function ranked(times: Map<string, number>): [string, number][] {
  return [...times.entries()]
    .sort((a, b) => b[1] - a[1])
    .slice(0, top)
    .map(([n, ms]) => [n, Math.round(ms * 10) / 10]);
}

/** Self and total milliseconds per function (each sample weighted by its time delta). */
function summarize(profile: CpuProfile): Summary {
  const stackOf = stacks(profile);
  const { keep, windows } = selected(profile, stackOf);
  const self = new Map<string, number>();
  const total = new Map<string, number>();
  for (const [i, id] of profile.samples.entries()) {
    if (!keep[i]) continue;
    const ms = (profile.timeDeltas[i] ?? 0) / 1000;
    const names = stackOf.get(id) ?? ['(unknown)'];
    self.set(names[0]!, (self.get(names[0]!) ?? 0) + ms);
    for (const name of names) total.set(name, (total.get(name) ?? 0) + ms);
  }
  return { spanMs: (profile.endTime - profile.startTime) / 1000, windows, selfMs: ranked(self), totalMs: ranked(total) };
}

const out: Record<string, Summary> = {};
for (const file of (await readdir(dir)).filter((f) => f.endsWith('.cpuprofile')).sort()) {
  out[file] = summarize(JSON.parse(await readFile(join(dir, file), 'utf8')) as CpuProfile);
}
console.log(JSON.stringify(out, null, 1));
