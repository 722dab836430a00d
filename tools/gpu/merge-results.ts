/**
 * Turns the files `tools/gpu/measure.sh` leaves in its folder into the current results files, one per benchmark:
 *   ttft-gpu-*.json        -> bench/results/ttft-gpu.json     (every shape's and context range's records)
 *   engine-gpu-*.json      -> bench/results/engine-gpu.json
 *   delivery-gpu-*.json    -> bench/results/delivery-gpu.json
 *   delivery-formats-gpu.json -> bench/results/delivery-formats-gpu.json (the fast path's stages, KV format 2 against 1)
 *   delivery-placed-*.json -> bench/results/delivery-placed-gpu.json (placing the fast path's objects lowest layer first
 *                             against each object's blocks as they come, two stage orders)
 *   profile-forward-*.json -> bench/results/gpu/profile-forward.json
 *   ttft-delivery-gpu-*.json -> bench/results/ttft-delivery-gpu.json (every codec, the hot tier, the peer and its host hit)
 *   ttft-codecs-gpu-*.json -> bench/results/ttft-codecs-gpu.json (int4 and the transform codec at 8k-32k, both paths)
 *   profile-expand-*.json  -> bench/results/gpu/profile-expand.json (KV expansion GB/s, transform codec and int4)
 *   profile-inject-*.json  -> bench/results/gpu/profile-inject.json (the injector's host side per pass: staging, submitting)
 *   profile-question-*.json -> bench/results/gpu/profile-question.json (an injected query's parts, attention variants)
 *   dawn-poll-cost-*.json  -> bench/results/gpu/dawn-poll-cost.json (the waiting thread's loop and collections)
 *   load-gpu.json          -> bench/results/load-gpu.json (kdn serve under 32 clients, batching off against on)
 *   decode-batch-gpu-*.json -> bench/results/decode-batch-gpu.json (1B and 8B decode, alone against batched)
 *   ttft-blend-*.json      -> bench/results/ttft-blend-gpu.json (blend against injection and the peer)
 *   fidelity-*.json        -> bench/results/fidelity.json (the shipped model's fidelity grid, one run per context set)
 *   ttft-receive-*.json    -> bench/results/ttft-receive-gpu.json (fetch threads receiving into returned buffers against
 *                             a new buffer per object, ABBA)
 *   ttft-formats-*.json    -> bench/results/ttft-formats-gpu.json (the fast path with KV format 2, BLAKE3, against 1,
 *                             sha256, ABBA)
 *   ttft-shm-order-*.json  -> bench/results/ttft-shm-order-gpu.json (the fast path's hand-over interleaved against each
 *                             object whole, ABBA)
 *   ttft-ab-*.json         -> bench/results/ttft-ab-shm-gpu.json, or ttft-ab-http-gpu.json when the runs went over
 *                             sockets (this checkout against the commits in ab-bases.json, in the order this, base1,
 *                             ..., then back; each record marked with its side and commit)
 *   ttft-handover-*.json   -> bench/results/ttft-handover-gpu.json (engine thread: blocks direct from the fetch threads
 *                             against through the event loop, ABBA)
 *   ttft-verify-*.json     -> bench/results/ttft-verify-gpu.json (the fast path's layers verified before the engine reads
 *                             them against alongside, ABBA)
 *   ttft-idle-*.json       -> bench/results/ttft-idle-gpu.json (every mode and the peer after the same GPU idle, ttft
 *                             --idle-ms, against none, ABBA)
 *   ttft-goals-*.json      -> bench/results/ttft-goals-gpu.json (fp16, int4 and the hot tier at 8k, 16k and 32k as kdn
 *                             runs them, beside the host-memory hit)
 *   ttft-spool-*.json      -> bench/results/ttft-spool-gpu.json (sockets: blocks spooled for the engine's staging reads
 *                             against sent with their bytes, ABBA at 8k and 16k, and the peer's host-memory hit)
 *   ttft-sink-*.json       -> bench/results/ttft-sink-gpu.json (the sink token computed every query against placed from
 *                             the hot tier, ABBA)
 *   compare-transformers.json -> bench/results/gpu/compare-transformers.json
 * Each merged file names the commit its runs measured (the folder's source.json, which every benchmark file must
 * agree with) and keeps each run's command, date, host and params. A partial run is refused: rerun that part.
 *   node --import tsx tools/gpu/merge-results.ts <folder> [--results <dir>]
 * `--results` writes the merged files under another folder than bench/results (laid out the same way). Nothing is
 * written unless every file merges.
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { BenchRecord, BenchResultFile } from '../../bench/report.ts';

const RESULTS = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'bench', 'results');
const USAGE = 'usage: node --import tsx tools/gpu/merge-results.ts <folder with source.json, from measure.sh> [--results <dir>]';

interface Source {
  commit: string;
  uncommittedChanges: boolean;
}

function readJson<T>(file: string): T {
  try {
    return JSON.parse(readFileSync(file, 'utf8')) as T;
  } catch (err) {
    throw new Error(`${file}: ${(err as Error).message} (did its step fail? its .log says)`);
  }
}

function writeAtomically(file: string, value: unknown): void {
  mkdirSync(dirname(file), { recursive: true });
  writeFileSync(`${file}.tmp`, `${JSON.stringify(value, null, 1)}\n`);
  renameSync(`${file}.tmp`, file);
  console.log(`wrote ${file}`);
}

const filesOf = (folder: string, prefix: string): string[] =>
  readdirSync(folder)
    // Timelines (ttft --timeline, `*-runs.json`) stay beside the runs: they are read, not merged.
    .filter((name) => name.startsWith(prefix) && name.endsWith('.json') && !name.endsWith('-runs.json'))
    .sort()
    .map((name) => join(folder, name));

const revision = (source: Source): { commit: string; uncommittedChanges?: true } =>
  source.uncommittedChanges ? { commit: source.commit, uncommittedChanges: true } : { commit: source.commit };

/** Benchmark runs read whole, each measured by one of `commits`; a partial run or another commit is refused. */
function readRuns(files: string[], commits: readonly string[]): { file: string; run: BenchResultFile }[] {
  const runs = files.map((file) => ({ file, run: readJson<BenchResultFile>(file) }));
  for (const { file, run } of runs) {
    if (run.partial) throw new Error(`${file} is partial (its run was cut off): run that part again`);
    if (!commits.includes(run.commit ?? '')) throw new Error(`${file} measured ${run.commit}, not ${commits.join(' or ')}`);
  }
  return runs;
}

/** Benchmark runs of one benchmark (bench/run.ts files) into one file with every run's records. */
function mergeBenchRuns(files: string[], name: string, source: Source): object {
  const runs = readRuns(files, [source.commit]);
  const records: BenchRecord[] = runs.flatMap(({ run }) => run.records);
  return {
    name,
    commands: runs.map(({ run }) => run.command),
    ...revision(source),
    runs: runs.map(({ run }) => ({ command: run.command, date: run.date, host: run.host, params: run.params ?? {} })),
    records,
  };
}

/**
 * The ab part's runs, each named ttft-ab-<n>-<side>.json: side `this` ran in this checkout, `base1`, `base2`, ... in
 * worktrees of the commits ab-bases.json names. Each record is marked with its side and commit, since every side's
 * records sit in one list. A base may be this checkout's own commit only when the checkout had uncommitted changes.
 */
function mergeAb(files: string[], bases: Record<string, string>, source: Source): { commands: string[]; [key: string]: unknown } {
  const commitOf = (side: string): string => {
    const commit = side === 'this' ? source.commit : bases[side];
    if (commit === undefined) throw new Error(`no commit for side ${side} in ab-bases.json`);
    return commit;
  };
  for (const [side, commit] of Object.entries(bases))
    if (commit === source.commit && !source.uncommittedChanges)
      throw new Error(`${side} is this checkout's own commit ${commit} with nothing changed: compare with another`);
  const runs = readRuns(files, [source.commit, ...Object.values(bases)]).map(({ file, run }) => {
    const side = /^ttft-ab-\d+-(\w+)\.json$/.exec(basename(file))?.[1];
    if (side === undefined) throw new Error(`${file} is not named ttft-ab-<n>-<side>.json`);
    if (run.commit !== commitOf(side)) throw new Error(`${file} measured ${run.commit}, not ${side}'s ${commitOf(side)}`);
    return { side, run };
  });
  const sideOf = (side: string) => (side === 'this' ? { side, ...revision(source) } : { side, commit: bases[side]! });
  return {
    name: 'ttft-ab',
    commands: runs.map(({ run }) => run.command),
    ...revision(source),
    bases,
    runs: runs.map(({ side, run }) => ({ ...sideOf(side), command: run.command, date: run.date, host: run.host })),
    records: runs.flatMap(({ side, run }) => run.records.map((r) => ({ ...sideOf(side), ...r }))),
  };
}

/**
 * Which path an A/B folder's runs took (measure.sh AB_PATH): comparisons over the fast path and over sockets are
 * different benchmarks, each with its current file.
 */
function abPath(commands: readonly string[]): 'shm' | 'http' {
  const paths = new Set(commands.map((command) => (/ --edge-shm\b/.test(command) ? 'shm' : 'http')));
  if (paths.size !== 1) throw new Error('the ab runs mix the fast path (--edge-shm) and sockets: rerun the ab part');
  return [...paths][0]!;
}

const BENCHMARKS = [
  ['ttft-gpu-', 'ttft-gpu'],
  ['engine-gpu-', 'engine-gpu'],
  ['delivery-gpu-', 'delivery-gpu'],
  ['delivery-formats-gpu', 'delivery-formats-gpu'],
  ['delivery-placed-', 'delivery-placed-gpu'],
  ['ttft-delivery-gpu-', 'ttft-delivery-gpu'],
  ['load-gpu', 'load-gpu'],
  ['decode-batch-gpu-', 'decode-batch-gpu'],
  ['ttft-handover-', 'ttft-handover-gpu'],
  ['ttft-blend-', 'ttft-blend-gpu'],
  ['ttft-receive-', 'ttft-receive-gpu'],
  ['ttft-formats-', 'ttft-formats-gpu'],
  ['ttft-shm-order-', 'ttft-shm-order-gpu'],
  ['ttft-codecs-gpu-', 'ttft-codecs-gpu'],
  ['ttft-verify-', 'ttft-verify-gpu'],
  ['ttft-idle-', 'ttft-idle-gpu'],
  ['ttft-goals-', 'ttft-goals-gpu'],
  ['ttft-spool-', 'ttft-spool-gpu'],
  ['ttft-sink-', 'ttft-sink-gpu'],
  ['fidelity-', 'fidelity'],
] as const;

/** Tools that print one JSON report per shape (`<name>-<shape>.json`), kept whole under gpu/. */
const REPORTS = ['profile-forward', 'profile-expand', 'profile-inject', 'profile-question', 'dawn-poll-cost'];

/** Every merged file the folder makes, by its path under the results folder; throws before any is written. */
function mergeFolder(folder: string, source: Source): Map<string, object> {
  const out = new Map<string, object>();
  const abFiles = filesOf(folder, 'ttft-ab-');
  if (abFiles.length > 0) {
    const ab = mergeAb(abFiles, readJson<Record<string, string>>(join(folder, 'ab-bases.json')), source);
    out.set(`ttft-ab-${abPath(ab.commands)}-gpu.json`, ab);
  }
  for (const [prefix, name] of BENCHMARKS) {
    const files = filesOf(folder, prefix);
    if (files.length > 0) out.set(`${name}.json`, mergeBenchRuns(files, name.replace(/-gpu$/, ''), source));
  }
  for (const name of REPORTS) {
    const files = filesOf(folder, `${name}-`);
    if (files.length > 0)
      out.set(join('gpu', `${name}.json`), { name, ...revision(source), shapes: files.map((file) => readJson<object>(file)) });
  }
  const comparison = join(folder, 'compare-transformers.json');
  if (existsSync(comparison)) {
    const command = 'python3 tools/gpu/compare-transformers.py --backend webgpu --dtype float16 --out compare-transformers.json';
    out.set(join('gpu', 'compare-transformers.json'), {
      name: 'compare-transformers',
      command,
      ...revision(source),
      ...readJson<object>(comparison),
    });
  }
  return out;
}

function main(args: readonly string[]): void {
  const [folder, flag, results = RESULTS, ...rest] = args;
  const known = flag === undefined ? args.length === 1 : flag === '--results' && args.length === 3;
  if (!folder || !known || rest.length > 0) throw new Error(USAGE);
  if (!existsSync(join(folder, 'source.json'))) throw new Error(`${folder} has no source.json: is it measure.sh's folder?\n${USAGE}`);
  const merged = mergeFolder(folder, readJson<Source>(join(folder, 'source.json')));
  if (merged.size === 0) throw new Error(`nothing to merge in ${folder}: run some of measure.sh's parts first (its header lists them)`);
  for (const [path, value] of merged) writeAtomically(join(results, path), value);
}

try {
  main(process.argv.slice(2));
} catch (err) {
  console.error(err instanceof Error ? err.message : String(err));
  process.exitCode = 1;
}
