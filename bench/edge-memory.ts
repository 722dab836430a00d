/**
 * What an edge with a shared-memory mirror (--shm-dir) holds in memory: a `kdn edge` process is filled with
 * --objects KV objects of --object-mib MiB each by PUT (the memory tier keeps them all), and once it has been idle for
 * --settle-ms its resident memory is read from /proc/<pid>/status (VmRSS; RssAnon, the process's own pages; RssShmem,
 * tmpfs pages it maps) beside the bytes of its mirror's files on tmpfs, which the host holds as well. The edge's own
 * /stats gives the tier's bytes and, where the build reports it, those held in the process (memory.heapBytes).
 *
 * --roots runs the edge from each listed checkout (with node_modules) in turns, alternating the order run by run
 * (a b b a ...), so that builds are compared in one run: e.g. `--roots .,../base` for this tree against an earlier
 * commit. Each record is one root's medians over --runs, with every run's figures.
 *
 *   npm run bench -- edge-memory [--objects 32] [--object-mib 8] [--runs 4] [--settle-ms 5000] [--roots .]
 */
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { secretSigner } from '../common/edge-token.ts';
import { EdgeClient } from '../edge/client/client.ts';
import { EDGE_HEADERS, EDGE_PATHS } from '../edge/protocol.ts';
import { startProcess } from '../fixtures/processes.ts';
import { codecFromString, encodeKVObject } from '../storage/kv-object/index.ts';
import { positiveInt } from './lib/args.ts';
import { median } from './lib/stats.ts';
import type { BenchRecord, BenchReport } from './report.ts';

const LAYERS = 32;
const KV_HEADS = 8;
const HEAD_DIM = 128;
const MIB = 2 ** 20;
const SECRET = 'edge-memory-bench-secret-0123456789';

interface Options {
  objects: number;
  objectMiB: number;
  runs: number;
  settleMs: number;
  roots: string[];
}

interface Sample {
  rssMiB: number;
  anonMiB: number;
  shmemMiB: number;
  mirrorMiB: number;
  tierMiB: number;
  heapMiB: number | null;
}

function parse(args: string[]): Options {
  const { values } = parseArgs({
    args,
    options: {
      objects: { type: 'string' },
      'object-mib': { type: 'string' },
      runs: { type: 'string' },
      'settle-ms': { type: 'string' },
      roots: { type: 'string' },
    },
  });
  return {
    objects: positiveInt(values.objects, 32, 'objects'),
    objectMiB: positiveInt(values['object-mib'], 8, 'object-mib'),
    runs: positiveInt(values.runs, 4, 'runs'),
    settleMs: positiveInt(values['settle-ms'], 5000, 'settle-ms'),
    roots: (values.roots ?? '.').split(',').map((root) => resolve(root)),
  };
}

export async function run(args: string[]): Promise<BenchReport> {
  const o = parse(args);
  if (!existsSync('/proc/self/status')) throw new Error('edge-memory reads /proc/<pid>/status: Linux only');
  for (const root of o.roots) if (!existsSync(join(root, 'bin', 'kdn.js'))) throw new Error(`${root} has no bin/kdn.js`);
  const objects = makeObjects(o);
  const samples = new Map<string, Sample[]>(o.roots.map((root) => [root, []]));
  for (let r = 0; r < o.runs; r++) {
    const order = r % 2 === 0 ? o.roots : [...o.roots].reverse();
    for (const root of order) {
      const sample = await measure(root, objects, o);
      samples.get(root)!.push(sample);
      console.error(`run ${r + 1}: ${root}: ${JSON.stringify(sample)}`);
    }
  }
  const records: BenchRecord[] = o.roots.map((root) => {
    const runs = samples.get(root)!;
    const med = (pick: (s: Sample) => number): number => Math.round(median(runs.map(pick)) * 10) / 10;
    const heap = runs.map((s) => s.heapMiB);
    return {
      root,
      objects: o.objects,
      tierMiB: med((s) => s.tierMiB),
      rssMiB: med((s) => s.rssMiB),
      anonMiB: med((s) => s.anonMiB),
      shmemMiB: med((s) => s.shmemMiB),
      mirrorMiB: med((s) => s.mirrorMiB),
      heapMiB: heap.includes(null) ? null : med((s) => s.heapMiB!),
      anonRuns: runs.map((s) => s.anonMiB).join(' '),
      rssRuns: runs.map((s) => s.rssMiB).join(' '),
    };
  });
  return {
    params: {
      objects: o.objects,
      objectMiB: o.objectMiB,
      shape: `${LAYERS} layers x ${KV_HEADS} kv heads x ${HEAD_DIM} head dim, fp16`,
      runs: o.runs,
      settleMs: o.settleMs,
      edge: 'kdn edge --memory (every object fits) --disk 0 --shm-dir <tmpfs folder>, file origin, objects PUT one at a time',
      timing: 'memory figures in MiB, medians over runs (roots alternated a b b a), read after the edge was idle for settleMs',
    },
    records,
  };
}

function makeObjects(o: Options): Buffer[] {
  const tokens = Math.round((o.objectMiB * MIB) / (LAYERS * 2 * KV_HEADS * HEAD_DIM * 2));
  return Array.from({ length: o.objects }, (_, i) => {
    const elements = tokens * KV_HEADS * HEAD_DIM;
    const perLayer = Array.from({ length: LAYERS }, (_, layer) => {
      const keys = new Float32Array(elements).map((_, j) => Math.sin(i + layer * 0.3 + j * 0.01));
      return { keys, values: keys.map((v) => -v) };
    });
    const tensors = { layers: LAYERS, kvHeads: KV_HEADS, headDim: HEAD_DIM, tokens, positionBase: 0, ropeApplied: true, perLayer };
    const tokenIds = Array.from({ length: tokens }, (_, t) => (t + i) % 1000);
    return encodeKVObject(tensors, { modelFingerprint: 'edge-memory', tokenIds, codec: codecFromString('fp16') });
  });
}

/** One edge process from `root`: filled, left to settle, measured, stopped. */
async function measure(root: string, objects: Buffer[], o: Options): Promise<Sample> {
  const dir = await mkdtemp(join(tmpdir(), 'kdn-edge-memory-'));
  const shmParent = await mkdtemp(join(existsSync('/dev/shm') ? '/dev/shm' : dir, 'kdn-edge-memory-'));
  const budget = `${Math.ceil((objects.length * objects[0]!.length * 1.1) / MIB)}MiB`;
  await mkdir(join(dir, 'origin'));
  const edge = await startProcess(
    [
      join(root, 'bin', 'kdn.js'),
      'edge',
      '--port',
      '0',
      '--json',
      '--origin',
      `file:${join(dir, 'origin')}`,
      '--disk-path',
      join(dir, 'disk'),
    ].concat(['--memory', budget, '--disk', '0', '--shm-dir', shmParent]),
    { env: { KDN_EDGE_SECRET: SECRET, LOG_LEVEL: 'warn' } },
  );
  const client = new EdgeClient({ edges: [edge.ready.url], secret: SECRET });
  try {
    for (const [i, body] of objects.entries()) await client.put(`kv/edge-memory/doc/chunk-${i}.kv`, body);
    await new Promise((done) => setTimeout(done, o.settleMs));
    const stats = await rawStats(edge.ready.url);
    const status = await readFile(`/proc/${edge.child.pid}/status`, 'utf8');
    const kib = (field: string): number => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? Number.NaN);
    return {
      rssMiB: round(kib('VmRSS') / 1024),
      anonMiB: round(kib('RssAnon') / 1024),
      shmemMiB: round(kib('RssShmem') / 1024),
      mirrorMiB: round((await folderBytes(shmParent)) / MIB),
      tierMiB: round(stats.memory.bytes / MIB),
      heapMiB: stats.memory.heapBytes === undefined ? null : round(stats.memory.heapBytes / MIB),
    };
  } finally {
    client.close();
    await edge.stop('SIGTERM');
    await rm(dir, { recursive: true, force: true });
    await rm(shmParent, { recursive: true, force: true });
  }
}

/**
 * The edge's /stats as it answers them, unchecked: EdgeClient.stats checks them against this build's schema, which an
 * earlier build's edge (--roots) may not meet.
 */
async function rawStats(url: string): Promise<{ memory: { bytes: number; heapBytes?: number } }> {
  const token = secretSigner(SECRET)({ method: 'GET', target: EDGE_PATHS.stats });
  const res = await fetch(url + EDGE_PATHS.stats, { headers: { [EDGE_HEADERS.token]: token } });
  if (!res.ok) throw new Error(`GET ${EDGE_PATHS.stats}: HTTP ${res.status} ${(await res.text()).slice(0, 200)}`);
  return (await res.json()) as { memory: { bytes: number; heapBytes?: number } };
}

async function folderBytes(folder: string): Promise<number> {
  let total = 0;
  for (const entry of await readdir(folder, { withFileTypes: true, recursive: true })) {
    if (entry.isFile()) total += (await stat(join(entry.parentPath, entry.name))).size;
  }
  return total;
}

function round(value: number): number {
  return Math.round(value * 10) / 10;
}
