/**
 * Bandwidth adaptation of codec levels, end to end: `kdn serve` (cpu backend, the shipped model) storing every chunk as int8
 * plus --levels, reaching its edge (a `kdn edge` process) through a token-bucket TCP proxy (bench/lib/throttle-proxy.ts)
 * that holds the edge-to-kdn direction to a link rate. For each link rate x TTFT target, a fresh server (its delivery
 * estimate at the seed) answers --queries queries naming two documents each, with ttftTargetMs set; per cell:
 *   the levels picked in order, the last one, bytes, fetch ms, throughput seen, TTFT, the estimate at the end, how
 *   many queries the level took to settle (the first query from which every pick is the last one's), how many
 *   fetches overran the target, and how many answers match the main codec's greedy answer to the same question.
 * Then one server under a link that speeds up (recovery): --queries at the slowest rate, then twice as many
 * unlimited, with a 25 ms target; a probe pick (one level above what fits, to sample throughput) is marked *.
 * The main codec's answers are taken once, unthrottled, without a target. About 3 minutes on 2 cores.
 *
 *   npm run bench -- adapt
 *   npm run bench -- adapt --rates 20,100,500,unlimited --targets 25,60,150 --queries 10     (MB/s)
 */
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { KdnApiClient, type QueryResponse } from '../kdn/client/api-client.ts';
import { DEFAULT_MODEL_DIR } from '../kdn/default-model.ts';
import { startProcess, TEST_API_KEY, TEST_EDGE_SECRET, type Started } from '../fixtures/processes.ts';
import { intList, parseFlags, positiveInt } from './lib/args.ts';
import { median, round } from './lib/stats.ts';
import { ThrottleProxy } from './lib/throttle-proxy.ts';
import type { BenchRecord, BenchReport } from './report.ts';

interface AdaptArgs {
  model: string;
  levels: string;
  /** MB/s; Infinity is no limit. */
  rates: number[];
  targets: number[];
  queries: number;
  maxTokens: number;
}

/** One query per pair of held-out texts (named in this order), each about 1400 tokens of context. */
const QUESTIONS = [
  'Why would someone choose Debian?',
  'What does the dictionary say about a bore?',
  'What does the hacker ethic say?',
  'Who went to the country of Moab?',
  'Why use Python?',
];

/** Link rates in MB/s, "unlimited" for none. */
function rateList(value: string | undefined): number[] {
  if (value === undefined) return [20, 100, 500, Infinity];
  return value.split(',').map((item) => {
    const rate = item.trim() === 'unlimited' ? Infinity : Number(item);
    if (!(rate > 0)) throw new Error(`--rates takes MB/s figures or "unlimited", got "${item}"`);
    return rate;
  });
}

function parse(args: string[]): AdaptArgs {
  const v = parseFlags(args, {
    model: { type: 'string' },
    levels: { type: 'string' },
    rates: { type: 'string' },
    targets: { type: 'string' },
    queries: { type: 'string' },
    'max-tokens': { type: 'string' },
  });
  return {
    model: v.model ?? DEFAULT_MODEL_DIR,
    levels: v.levels ?? 'transform:x4,transform:x16',
    rates: rateList(v.rates),
    targets: intList(v.targets, [25, 60, 150], 'targets'),
    queries: positiveInt(v.queries, 10, 'queries'),
    maxTokens: positiveInt(v['max-tokens'], 8, 'max-tokens'),
  };
}

/** A kdn server over the proxy; the first start fits the transform table (over a minute on the shipped model). */
function serve(args: AdaptArgs, dir: string, edge: string): Promise<Started> {
  const flags = ['--data-dir', join(dir, 'data'), '--origin', `file:${join(dir, 'origin')}`, '--edges', edge, '--port', '0'];
  const codecs = ['--codec', 'int8', '--codec-levels', args.levels];
  return startProcess(
    ['bin/kdn.js', 'serve', ...flags, '--model', args.model, '--backend', 'cpu', ...codecs, '--hot-tier', '0', '--json'],
    {
      env: { LOG_LEVEL: 'error', KDN_API_KEYS: `${TEST_API_KEY}=test:operator`, KDN_EDGE_SECRET: TEST_EDGE_SECRET, KDN_RATE_LIMIT: '0' },
      timeoutMs: 600_000,
    },
  );
}

async function uploadHeldout(api: KdnApiClient): Promise<string[]> {
  const dir = new URL('./data/heldout/', import.meta.url);
  const titles = (await readdir(dir)).sort();
  for (const title of titles) {
    const { job } = await api.upload({ title, text: await readFile(new URL(title, dir), 'utf8') });
    await api.waitForJob(job.id);
  }
  return titles;
}

/** The i-th query of a cell: two neighbouring documents and their question, greedy. */
function request(titles: string[], i: number, maxTokens: number, ttftTargetMs?: number) {
  const at = i % QUESTIONS.length;
  return {
    question: QUESTIONS[at]!,
    documents: [titles[at]!, titles[(at + 1) % titles.length]!],
    maxTokens,
    temperature: 0,
    ...(ttftTargetMs === undefined ? {} : { ttftTargetMs }),
  };
}

const RECOVERY_TARGET_MS = 25;

const short = (codec: string): string => codec.replace('transform:', '');

/** The first query index from which every pick is the last pick (probes, marked *, left out). */
function settledAt(levels: string[]): number {
  let at = levels.length - 1;
  while (at > 0 && levels[at - 1] === levels[levels.length - 1]) at--;
  return at;
}

function cellRecord(link: string | number, target: number, answers: QueryResponse[], reference: Map<string, string>): BenchRecord {
  const levels = answers.map((a) => `${short(a.level?.codec ?? 'int8')}${a.level?.probe ? '*' : ''}`);
  const fetchMs = answers.map((a) => a.timings.fetch);
  const last = answers[answers.length - 1]!;
  return {
    link_MBps: link,
    ttft_target_ms: target,
    levels: levels.join(' '),
    last_level: levels[levels.length - 1]!,
    settled_after_queries: settledAt(levels.filter((l) => !l.endsWith('*'))),
    bytes_median: median(answers.map((a) => a.bytes)),
    fetch_ms_median: round(median(fetchMs)),
    seen_MBps_median: round(median(answers.map((a) => a.bytes / a.timings.fetch / 1000))),
    estimate_MBps_last: round((last.level?.bytesPerSecond ?? NaN) / 1e6),
    ttft_ms_median: round(median(answers.map((a) => a.timings.ttft))),
    fetch_over_target: fetchMs.filter((ms) => ms > target).length,
    same_answer_as_int8: answers.filter((a) => a.answer === reference.get(a.question)).length,
    queries: answers.length,
  };
}

/**
 * A link that speeds up under a running server: --queries at the slowest rate, then twice as many unlimited, at
 * RECOVERY_TARGET_MS, which the middle level meets unthrottled but not at the slow rate. An estimate that locks low
 * stays on the smallest level after the link got fast.
 */
async function recovery(
  api: KdnApiClient,
  proxy: ThrottleProxy,
  titles: string[],
  reference: Map<string, string>,
  args: AdaptArgs,
): Promise<BenchRecord[]> {
  const slowest = Math.min(...args.rates);
  const phase = async (rate: number, queries: number, from: number): Promise<QueryResponse[]> => {
    proxy.setRate(rate * 1e6);
    const answers: QueryResponse[] = [];
    for (let i = 0; i < queries; i++) answers.push(await api.query(request(titles, from + i, args.maxTokens, RECOVERY_TARGET_MS)));
    return answers;
  };
  const slow = await phase(slowest, args.queries, 0);
  const fast = await phase(Infinity, 2 * args.queries, args.queries);
  return [
    { phase: 'recovery-slow', ...cellRecord(slowest, RECOVERY_TARGET_MS, slow, reference) },
    { phase: 'recovery-fast', ...cellRecord('unlimited', RECOVERY_TARGET_MS, fast, reference) },
  ];
}

export async function run(argv: string[]): Promise<BenchReport> {
  const args = parse(argv);
  const dir = await mkdtemp(join(tmpdir(), 'kdn-bench-adapt-'));
  const records: BenchRecord[] = [];
  const edge = await startProcess(
    ['bin/kdn.js', 'edge', '--port', '0', '--origin', `file:${join(dir, 'origin')}`, '--disk-path', join(dir, 'edge'), '--json'],
    { env: { KDN_EDGE_SECRET: TEST_EDGE_SECRET, LOG_LEVEL: 'error' } },
  );
  const proxy = await ThrottleProxy.start(edge.ready.url);
  let server: Started | undefined;
  try {
    server = await serve(args, dir, proxy.url);
    let api = new KdnApiClient(server.ready.url, TEST_API_KEY);
    const titles = await uploadHeldout(api);
    const reference = new Map<string, string>();
    for (let i = 0; i < QUESTIONS.length; i++) reference.set(QUESTIONS[i]!, (await api.query(request(titles, i, args.maxTokens))).answer);
    const sizes = await api.query({ ...request(titles, 0, args.maxTokens), ttftTargetMs: 600_000 });
    for (const rate of args.rates) {
      proxy.setRate(rate * 1e6);
      for (const target of args.targets) {
        // A fresh server: its estimate starts from the seed, as after a restart.
        await server.stop();
        server = await serve(args, dir, proxy.url);
        api = new KdnApiClient(server.ready.url, TEST_API_KEY);
        const answers: QueryResponse[] = [];
        for (let i = 0; i < args.queries; i++) answers.push(await api.query(request(titles, i, args.maxTokens, target)));
        records.push(cellRecord(rate === Infinity ? 'unlimited' : rate, target, answers, reference));
        console.error(JSON.stringify(records[records.length - 1]));
      }
    }
    await server.stop();
    server = await serve(args, dir, proxy.url);
    records.push(...(await recovery(new KdnApiClient(server.ready.url, TEST_API_KEY), proxy, titles, reference, args)));
    return {
      params: {
        model: args.model,
        codec: 'int8',
        levels: args.levels,
        queries_per_cell: args.queries,
        max_tokens: args.maxTokens,
        int8_query_bytes: sizes.bytes,
      },
      records,
    };
  } finally {
    await server?.stop();
    await proxy.close();
    await edge.stop();
    await rm(dir, { recursive: true, force: true });
  }
}
