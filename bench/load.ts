/**
 * The control plane under load, as clients see it: `kdn serve` (cpu backend) in its own process, driven over HTTP
 * by this one. For each engine placement (`--modes`):
 *   thread: the engine on its own thread (engine-adapter/worker, the default);
 *   loop:   the engine on the event loop (KDN_ENGINE_THREAD=false), the placement kdn had before.
 * (Document tokenizing runs on its worker thread in both.) Each placement starts two servers, one with batching off
 * (KDN_ENGINE_BATCH=1: one query at a time) and one with --batch queries decoding together, and measures:
 *   throughput: --clients concurrent clients of one tenant send queries back to back for --seconds; generated
 *     tokens/s, queries/s, time to first token and latency (p50/p99). Off and on alternate for --rounds rounds, the
 *     order flipping each round (off-on, on-off, ...), so drift in the machine's speed hits both alike; each
 *     setting's samples are summarised by their median and range, and batching's speedup is the ratio of medians.
 *     Each record also says what the engine was busy with (bench/lib/engine-metrics.ts): its busy share of the
 *     time, and per kind of compute call the calls per query and milliseconds each.
 * and then, on the batching server (kdn's default):
 *   healthz: GET /healthz every 20 ms while a --ingest-mib document is ingested (at most --seconds x 2), then the
 *     job is cancelled; p50/p99/max.
 *   flood: tenant "quiet" queries back to back, first alone, then while tenant "flood" uploads small documents at
 *     --flood-rate per second (its rate limit) for --seconds; quiet's latency p50/p99 flooded vs idle, and how
 *     many uploads were accepted (202) or refused (429: its queue is full).
 *
 *   npm run bench -- load
 *   npm run bench -- load --modes thread --clients 1,32 --seconds 10 --batch 32 --rounds 4
 *   npm run bench -- load --backend webgpu --modes thread       (on a GPU machine)
 */
import { mkdtemp, readFile, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { KdnApiClient } from '../kdn/client/api-client.ts';
import { DEFAULT_MODEL_DIR } from '../kdn/default-model.ts';
import { startKdnProcess, type Started } from '../fixtures/processes.ts';
import { choice, choiceList, intList, parseFlags, positiveInt } from './lib/args.ts';
import { watchEngine } from './lib/engine-metrics.ts';
import { median, round } from './lib/stats.ts';
import type { BenchRecord, BenchReport } from './report.ts';

const MODES = ['thread', 'loop'] as const;
type Mode = (typeof MODES)[number];
const QUIET_KEY = 'bench-quiet-key-0123456789abcdef';
const FLOOD_KEY = 'bench-flood-key-0123456789abcdef';
const QUESTIONS = ['Who went to the country of Moab?', 'Why choose Debian?', 'What does the hacker ethic say?', 'Why use Python?'];
const HEALTH_EVERY_MS = 20;

interface LoadArgs {
  model: string;
  modes: Mode[];
  clients: number[];
  seconds: number;
  ingestMib: number;
  floodRate: number;
  maxTokens: number;
  backend: 'cpu' | 'webgpu';
  batch: number;
  rounds: number;
}

/** The two engine settings compared: one query at a time, and --batch decoding together. */
type Batching = 'off' | 'on';

function parse(args: string[]): LoadArgs {
  const v = parseFlags(args, {
    model: { type: 'string' },
    modes: { type: 'string' },
    clients: { type: 'string' },
    seconds: { type: 'string' },
    'ingest-mib': { type: 'string' },
    'flood-rate': { type: 'string' },
    'max-tokens': { type: 'string' },
    backend: { type: 'string' },
    batch: { type: 'string' },
    rounds: { type: 'string' },
  });
  return {
    model: v.model ?? DEFAULT_MODEL_DIR,
    modes: choiceList(v.modes, MODES, MODES, 'modes'),
    clients: intList(v.clients, [1, 8, 32], 'clients'),
    seconds: positiveInt(v.seconds, 15, 'seconds'),
    ingestMib: positiveInt(v['ingest-mib'], 4, 'ingest-mib'),
    floodRate: positiveInt(v['flood-rate'], 100, 'flood-rate'),
    maxTokens: positiveInt(v['max-tokens'], 16, 'max-tokens'),
    backend: choice(v.backend, 'cpu', ['cpu', 'webgpu'] as const, 'backend'),
    batch: positiveInt(v.batch, 16, 'batch'),
    rounds: positiveInt(v.rounds, 2, 'rounds'),
  };
}

function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** The held-out texts, each paragraph numbered so no two chunks are alike, repeated up to `bytes`. */
async function bigDocument(bytes: number): Promise<string> {
  const dir = new URL('./data/heldout/', import.meta.url);
  const paragraphs: string[] = [];
  for (const name of (await readdir(dir)).sort())
    paragraphs.push(...(await readFile(new URL(name, dir), 'utf8')).split(/\n\s*\n/).filter((p) => p.trim() !== ''));
  const parts: string[] = [];
  let size = 0;
  for (let i = 0; size < bytes; i++) {
    const part = `[${i}] ${paragraphs[i % paragraphs.length]!.trim()}\n\n`;
    parts.push(part);
    size += Buffer.byteLength(part);
  }
  return parts.join('');
}

async function serve(mode: Mode, batch: number, args: LoadArgs, dir: string): Promise<Started> {
  return startKdnProcess(
    [
      'serve',
      '--data-dir',
      join(dir, `${mode}-${batch}`),
      '--port',
      '0',
      '--model',
      args.model,
      '--backend',
      args.backend,
      '--max-upload',
      '16MiB',
    ],
    {
      KDN_API_KEYS: `${QUIET_KEY}=quiet,${FLOOD_KEY}=flood`,
      KDN_ENGINE_THREAD: String(mode === 'thread'),
      KDN_ENGINE_BATCH: String(batch),
      KDN_METRICS_PUBLIC: 'true',
      LOG_LEVEL: 'error',
    },
  );
}

/** Uploads the held-out texts, so queries retrieve and inject real chunks. */
async function ingestHeldout(url: string): Promise<void> {
  const quiet = new KdnApiClient(url, QUIET_KEY);
  for (const name of (await readdir(new URL('./data/heldout/', import.meta.url))).sort()) {
    const { job } = await quiet.upload({ title: name, text: await readFile(new URL(`./data/heldout/${name}`, import.meta.url), 'utf8') });
    await quiet.waitForJob(job.id);
  }
}

const total = (records: readonly BenchRecord[], key: string): number => records.reduce((sum, r) => sum + (r[key] as number), 0);

/** Median and range of one figure over a setting's rounds. */
function spread(records: readonly BenchRecord[], key: string): Record<string, number> {
  const values = records.map((r) => r[key] as number);
  return { [key]: round(median(values)), [`${key}_min`]: round(Math.min(...values)), [`${key}_max`]: round(Math.max(...values)) };
}

/** The median over rounds of every figure whose key `pick` accepts (those present in all rounds). */
function medians(records: readonly BenchRecord[], pick: (key: string) => boolean): Record<string, number> {
  const keys = Object.keys(records[0] ?? {}).filter((k) => pick(k) && records.every((r) => typeof r[k] === 'number'));
  return Object.fromEntries(keys.map((k) => [k, round(median(records.map((r) => r[k] as number)))]));
}

/**
 * Throughput with batching off and on at each client count, alternating the two servers over the rounds in both
 * orders; one record per setting (medians and ranges) and one with batching's speedup.
 */
async function throughputOffVsOn(urls: Record<Batching, string>, args: LoadArgs): Promise<BenchRecord[]> {
  const records: BenchRecord[] = [];
  for (const clients of args.clients) {
    const runs: Record<Batching, BenchRecord[]> = { off: [], on: [] };
    for (let r = 0; r < args.rounds; r++) {
      const order: Batching[] = r % 2 === 0 ? ['off', 'on'] : ['on', 'off'];
      for (const setting of order) runs[setting].push(await throughput(urls[setting], clients, args));
    }
    const summary = (setting: Batching): BenchRecord => ({
      measure: 'throughput',
      clients,
      batching: setting,
      engine_batch: setting === 'on' ? args.batch : 1,
      rounds: args.rounds,
      queries: total(runs[setting], 'queries'),
      errors: total(runs[setting], 'errors'),
      ...spread(runs[setting], 'queries_per_s'),
      ...spread(runs[setting], 'tokens_per_s'),
      ...spread(runs[setting], 'latency_p50_ms'),
      ...spread(runs[setting], 'ttft_p50_ms'),
      ...spread(runs[setting], 'ttft_p99_ms'),
      ...spread(runs[setting], 'latency_p99_ms'),
      ...medians(runs[setting], (key) => key.startsWith('engine_')),
    });
    const [off, on] = [summary('off'), summary('on')];
    records.push(off, on, {
      measure: 'batching-speedup',
      clients,
      engine_batch: args.batch,
      queries_per_s_ratio: round((on.queries_per_s as number) / (off.queries_per_s as number), 3),
      latency_p50_ratio: round((on.latency_p50_ms as number) / (off.latency_p50_ms as number), 3),
    });
  }
  return records;
}

async function throughput(url: string, clients: number, args: LoadArgs): Promise<BenchRecord> {
  const api = new KdnApiClient(url, QUIET_KEY);
  const ttft: number[] = [];
  const latency: number[] = [];
  let tokens = 0;
  let errors = 0;
  const engine = await watchEngine(url);
  const start = performance.now();
  const end = start + args.seconds * 1000;
  await Promise.all(
    Array.from({ length: clients }, async (_, id) => {
      for (let n = 0; performance.now() < end; n++) {
        const t0 = performance.now();
        try {
          const answer = await api.query({ question: QUESTIONS[(id + n) % QUESTIONS.length]!, topK: 2, maxTokens: args.maxTokens });
          latency.push(performance.now() - t0);
          ttft.push(answer.timings.ttft);
          tokens += answer.tokens.generated;
        } catch {
          errors++;
        }
      }
    }),
  );
  const seconds = (performance.now() - start) / 1000;
  const work = await engine.stop(seconds, latency.length);
  return {
    measure: 'throughput',
    clients,
    queries: latency.length,
    errors,
    tokens_per_s: round(tokens / seconds),
    queries_per_s: round(latency.length / seconds),
    ttft_p50_ms: round(percentile(ttft, 50)),
    ttft_p99_ms: round(percentile(ttft, 99)),
    latency_p50_ms: round(percentile(latency, 50)),
    latency_p99_ms: round(percentile(latency, 99)),
    ...work,
  };
}

async function healthDuringIngest(url: string, args: LoadArgs): Promise<BenchRecord> {
  const api = new KdnApiClient(url, FLOOD_KEY);
  const text = await bigDocument(args.ingestMib * 2 ** 20);
  const { job } = await api.upload({ title: `big-${Date.now()}`, text });
  const samples: number[] = [];
  const end = performance.now() + args.seconds * 2000;
  let status = job.status;
  let objects = 0;
  let polled = 0;
  while (performance.now() < end && status !== 'done' && status !== 'failed') {
    const t0 = performance.now();
    const res = await fetch(`${url}/healthz`);
    await res.text();
    samples.push(performance.now() - t0);
    if (++polled % 25 === 0) {
      const seen = await api.job(job.id);
      status = seen.status;
      objects = seen.progress.objects.done;
    }
    await sleep(HEALTH_EVERY_MS);
  }
  await api.cancelJob(job.id).catch(() => undefined);
  return {
    measure: 'healthz-during-ingest',
    ingest_mib: args.ingestMib,
    samples: samples.length,
    objects_stored: objects,
    healthz_p50_ms: round(percentile(samples, 50)),
    healthz_p99_ms: round(percentile(samples, 99)),
    healthz_max_ms: round(Math.max(...samples)),
  };
}

/** Quiet's queries one after another until `until()`; their latencies. */
async function quietQueries(api: KdnApiClient, maxTokens: number, until: () => boolean): Promise<number[]> {
  const latency: number[] = [];
  for (let n = 0; !until(); n++) {
    const t0 = performance.now();
    await api.query({ question: QUESTIONS[n % QUESTIONS.length]!, topK: 2, maxTokens });
    latency.push(performance.now() - t0);
  }
  return latency;
}

async function flood(url: string, args: LoadArgs): Promise<BenchRecord> {
  const quiet = new KdnApiClient(url, QUIET_KEY);
  const idleEnd = performance.now() + (args.seconds * 1000) / 2;
  const idle = await quietQueries(quiet, args.maxTokens, () => performance.now() > idleEnd);
  const floodEnd = performance.now() + args.seconds * 1000;
  const outcomes = { accepted: 0, refused: 0, other: 0 };
  const uploads: Promise<void>[] = [];
  const flooding = (async () => {
    for (let i = 0; performance.now() < floodEnd; i++) {
      uploads.push(
        fetch(`${url}/v1/documents`, {
          method: 'POST',
          headers: { authorization: `Bearer ${FLOOD_KEY}`, 'content-type': 'application/json' },
          body: JSON.stringify({
            title: `tiny-${i}`,
            text: `Note ${i}: the harbour master counts ${i} ships at high water, and the lamp turns ${i % 7} times.`,
          }),
        }).then(
          async (res) => {
            await res.text();
            if (res.status === 202) outcomes.accepted++;
            else if (res.status === 429) outcomes.refused++;
            else outcomes.other++;
          },
          () => void outcomes.other++,
        ),
      );
      await sleep(1000 / args.floodRate);
    }
  })();
  const flooded = await quietQueries(quiet, args.maxTokens, () => performance.now() > floodEnd);
  await flooding;
  await Promise.all(uploads);
  return {
    measure: 'query-under-upload-flood',
    flood_rate_per_s: args.floodRate,
    uploads_accepted: outcomes.accepted,
    uploads_refused_429: outcomes.refused,
    uploads_other: outcomes.other,
    idle_queries: idle.length,
    idle_p50_ms: round(median(idle)),
    idle_p99_ms: round(percentile(idle, 99)),
    flooded_queries: flooded.length,
    flooded_p50_ms: round(median(flooded)),
    flooded_p99_ms: round(percentile(flooded, 99)),
    p50_ratio: round(median(flooded) / median(idle), 3),
  };
}

export async function run(argv: string[]): Promise<BenchReport> {
  const args = parse(argv);
  const dir = await mkdtemp(join(tmpdir(), 'kdn-bench-load-'));
  const records: BenchRecord[] = [];
  try {
    for (const mode of args.modes) {
      const servers: Partial<Record<Batching, Started>> = {};
      try {
        servers.off = await serve(mode, 1, args, dir);
        servers.on = await serve(mode, args.batch, args, dir);
        const urls = { off: servers.off.ready.url, on: servers.on.ready.url };
        await ingestHeldout(urls.off);
        await ingestHeldout(urls.on);
        for (const record of await throughputOffVsOn(urls, args)) records.push({ mode, ...record });
        records.push({ mode, engine_batch: args.batch, ...(await healthDuringIngest(urls.on, args)) });
        records.push({ mode, engine_batch: args.batch, ...(await flood(urls.on, args)) });
      } finally {
        await servers.on?.stop();
        await servers.off?.stop();
      }
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
  return {
    params: {
      model: args.model,
      backend: args.backend,
      seconds: args.seconds,
      ingest_mib: args.ingestMib,
      flood_rate_per_s: args.floodRate,
      max_tokens: args.maxTokens,
      clients: args.clients.join(','),
      engine_batch: args.batch,
      rounds: args.rounds,
    },
    records,
  };
}
