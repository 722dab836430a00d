import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { ENGINE_CALLS, type EngineCall, type EngineWork } from '../../engine-adapter/index.ts';
import type { SpoolStats } from '../query/receive-spool.ts';

/** kdn's Prometheus metrics, one registry per server so two kdn instances in one process do not collide. */
export class KdnMetrics {
  readonly registry = new Registry();
  readonly requests = new Counter({
    name: 'kdn_http_requests_total',
    help: 'HTTP requests by route, method and status',
    labelNames: ['route', 'method', 'status'] as const,
    registers: [this.registry],
  });
  readonly latency = new Histogram({
    name: 'kdn_http_request_duration_seconds',
    help: 'HTTP request latency by route',
    labelNames: ['route'] as const,
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
    registers: [this.registry],
  });
  readonly queueDepth = new Gauge({
    name: 'kdn_engine_queue_depth',
    help: 'Engine tasks (queries and ingest jobs) waiting or running',
    registers: [this.registry],
  });
  readonly queryTokens = new Counter({
    name: 'kdn_query_tokens_total',
    help: 'Context tokens of queries by how they got into the engine (reused from KV objects or computed), and generated tokens',
    labelNames: ['kind'] as const,
    registers: [this.registry],
  });
  readonly queryStage = new Histogram({
    name: 'kdn_query_stage_seconds',
    help: 'Query time by stage (retrieval, queue, fetch, injection, prefill, ttft, total)',
    labelNames: ['stage', 'mode'] as const,
    buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
    registers: [this.registry],
  });
  readonly chunkFetches = new Counter({
    name: 'kdn_chunk_fetches_total',
    help: 'Chunk KV objects used by queries, by the tier that served them (or computed on a miss)',
    labelNames: ['tier'] as const,
    registers: [this.registry],
  });
  readonly ingestObjects = new Counter({
    name: 'kdn_ingest_objects_total',
    help: 'Chunk KV objects handled by ingest jobs: computed, or skipped because the origin had them',
    labelNames: ['outcome'] as const,
    registers: [this.registry],
  });

  /** `engineWork` reads what the engine's device has been busy with, when /metrics is scraped. */
  constructor(engineWork?: () => Promise<EngineWork>) {
    if (engineWork) this.watchEngine(engineWork);
    collectDefaultMetrics({ register: this.registry, prefix: 'kdn_' });
    // prom-client's sums of these gauges end in _total, which Prometheus reserves for counters (promtool rejects
    // them); the per-type gauges they sum stay.
    for (const name of ['kdn_nodejs_active_handles_total', 'kdn_nodejs_active_requests_total', 'kdn_nodejs_active_resources_total']) {
      this.registry.removeSingleMetric(name);
    }
  }

  /** Counts what the fetch threads' spools took (kdn/query/receive-spool.ts), read from `stats` at every scrape. */
  watchSpool(stats: () => SpoolStats): void {
    new Counter({
      name: 'kdn_fetch_spool_bytes_total',
      help:
        "Bytes of blocks received over HTTP for the engine's thread: written to the fetch threads' memory files " +
        '(spooled), or sent with their bytes (sent: past the spool bound, or its folder full)',
      labelNames: ['outcome'],
      registers: [this.registry],
      collect() {
        const { spooledBytes, sentBytes } = stats();
        this.reset();
        this.inc({ outcome: 'spooled' }, spooledBytes);
        this.inc({ outcome: 'sent' }, sentBytes);
      },
    });
    new Counter({
      name: 'kdn_fetch_spool_failures_total',
      help: 'Spool files that could not be made or written, most likely a full folder (a container needs shm_size)',
      registers: [this.registry],
      collect() {
        this.reset();
        this.inc(stats().failures);
      },
    });
  }

  private watchEngine(engineWork: () => Promise<EngineWork>): void {
    // One read of the engine per scrape, shared by the counters that report it. An engine that cannot answer (its
    // thread died, it is shutting down) leaves the last figures in place rather than failing the whole scrape.
    let read: Promise<EngineWork | null> | undefined;
    const current = (): Promise<EngineWork | null> => {
      read ??= engineWork()
        .catch(() => null)
        .finally(() => setImmediate(() => (read = undefined)));
      return read;
    };
    for (const { name, help, values } of ENGINE_COUNTERS) {
      new Counter({
        name,
        help,
        labelNames: ['call', 'part', 'state'],
        registers: [this.registry],
        async collect() {
          const work = await current();
          if (work === null) return;
          this.reset();
          for (const [labels, value] of values(work)) this.inc(labels, value);
        },
      });
    }
  }
}

type EngineLabels = { call?: EngineCall; part?: 'stage' | 'submit' | 'wait'; state?: 'active' | 'idle' };

/** A counter set to the engine's own running total at every scrape. */
interface EngineCounter {
  name: string;
  help: string;
  values: (work: EngineWork) => [EngineLabels, number][];
}

const perCall = (value: (entry: EngineWork['calls'][EngineCall]) => number) => (work: EngineWork) =>
  ENGINE_CALLS.map((call): [EngineLabels, number] => [{ call }, value(work.calls[call])]);

const ENGINE_COUNTERS: EngineCounter[] = [
  {
    name: 'kdn_engine_busy_seconds_total',
    help: 'Seconds the engine device spent in compute calls, by call (forwards, batched decode steps, blends, KV reads)',
    values: perCall((c) => c.seconds),
  },
  { name: 'kdn_engine_calls_total', help: 'Compute calls the engine device ran, by call', values: perCall((c) => c.count) },
  {
    name: 'kdn_engine_batch_sequences_total',
    help: 'Sequences carried by batched decode steps (divide by kdn_engine_calls_total{call="batchForward"})',
    values: (work) => [[{}, work.batchSequences]],
  },
  {
    name: 'kdn_engine_kv_blocks_total',
    help: 'Injected KV layer blocks the engine placed in its caches',
    values: (work) => [[{}, work.kvWrites.blocks]],
  },
  { name: 'kdn_engine_kv_bytes_total', help: 'Encoded bytes of those blocks', values: (work) => [[{}, work.kvWrites.bytes]] },
  {
    name: 'kdn_engine_kv_read_blocks_total',
    help: "Of those blocks, the ones read on libuv's pool from a file (a same-host edge's shared-memory copy, or a fetch thread's spool) instead of copied on the engine's thread",
    values: (work) => [[{}, work.kvWrites.readBlocks]],
  },
  {
    name: 'kdn_engine_kv_dispatches_total',
    help: "Dispatches expanding those blocks in the device's cache",
    values: (work) => [[{}, work.kvWrites.dispatches]],
  },
  {
    name: 'kdn_engine_kv_write_seconds_total',
    help:
      "The engine thread's time placing injected KV, by part: copying blocks to the device (stage), recording and " +
      'submitting their expansion (submit), waiting for a staging buffer the device still reads (wait)',
    values: (work) => [
      [{ part: 'stage' }, work.kvWrites.stageSeconds],
      [{ part: 'submit' }, work.kvWrites.submitSeconds],
      [{ part: 'wait' }, work.kvWrites.waitSeconds],
    ],
  },
  {
    name: 'kdn_engine_loop_seconds_total',
    help:
      "The event loop of the engine's thread (its own, or the control plane's with KDN_ENGINE_THREAD=false), active " +
      'or idle: active near the time elapsed says that thread is saturated',
    values: (work) => [
      [{ state: 'active' }, work.loop.activeSeconds],
      [{ state: 'idle' }, work.loop.idleSeconds],
    ],
  },
  {
    name: 'kdn_engine_gc_seconds_total',
    help: "Garbage collection pauses on the engine's thread: a full collection pauses the placing of an injected context",
    values: (work) => [[{}, work.loop.gcSeconds]],
  },
  {
    name: 'kdn_engine_full_gcs_total',
    help: "Full (mark-compact) garbage collections on the engine's thread",
    values: (work) => [[{}, work.loop.majorGcs]],
  },
];
