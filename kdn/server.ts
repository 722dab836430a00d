import { randomBytes } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { KdnError } from '../common/errors.ts';
import { listen } from '../common/listen.ts';
import { createLogger, type Logger } from '../common/log.ts';
import { capConnectionsPerAddress } from '../common/slow-clients.ts';
import { EdgeClient } from '../edge/client/client.ts';
import { startEdge, type RunningEdge } from '../edge/server/main.ts';
import { createEngine, createEngineInWorker } from '../engine-adapter/index.ts';
import type { Engine } from '../engine-adapter/types.ts';
import { codecFromString, type EncodeMeta } from '../storage/kv-object/index.ts';
import type { CodecSpec, KVTensors } from '../storage/kv-object/types.ts';
import type { ObjectStore } from '../storage/object-store.ts';
import { loadOrFitTable } from './ingest/transform/table-store.ts';
import { transformTableKey } from '../storage/keys.ts';
import { openStore } from '../storage/open-store.ts';
import { createApp } from './api/app.ts';
import { KdnMetrics } from './api/metrics.ts';
import { loadAccess } from './auth/access.ts';
import type { ApiServices } from './api/services.ts';
import type { Access } from './auth/access.ts';
import { Catalog } from './catalog.ts';
import type { KdnConfig } from './config.ts';
import type { IngestContext } from './ingest/ingest-document.ts';
import { IngestThread } from './ingest/ingest-thread.ts';
import { IngestJobs } from './ingest/jobs.ts';
import { ChunkRepair } from './ingest/repair.ts';
import { KvFetchPool } from './query/kv-fetch-pool.ts';
import { DeliveryEstimate } from './query/delivery-estimate.ts';
import { defaultFetchThreads, inThreadFetcher, type KvFetcher } from './query/kv-fetcher.ts';
import type { WorkerEdgeOptions } from './query/kv-fetch-protocol.ts';
import { TransformTableLoader, withTransformTables } from './query/transform-tables.ts';
import { QueryService } from './query/query-service.ts';
import { EngineScheduler } from './scheduler/engine-scheduler.ts';
import { AnswerService } from './services/answer-service.ts';
import { DocumentService } from './services/document-service.ts';
import { JobService } from './services/job-service.ts';
import { OperationsService } from './services/operations-service.ts';
import { UploadAdmission } from './services/upload-admission.ts';

/** How long an idle client connection is kept open (connections per address are capped, see slow-clients.ts). */
const KEEP_ALIVE_TIMEOUT_MS = 65_000;

/** The parts a running kdn is made of, for its command line and for tests that drive them directly. */
export interface KdnParts {
  config: KdnConfig;
  engine: Engine;
  origin: ObjectStore;
  edges: EdgeClient;
  catalog: Catalog;
  scheduler: EngineScheduler;
  jobs: IngestJobs;
  queries: QueryService;
  metrics: KdnMetrics;
  access: Access;
  log: Logger;
}

export interface RunningKdn {
  url: string;
  port: number;
  parts: KdnParts;
  /** The edge started inside this process when no edges were configured. */
  embeddedEdge: RunningEdge | undefined;
  close(): Promise<void>;
}

/** The engine kdn serves with, on its own thread unless configured otherwise; chunks must fit its positions. */
async function startEngine(config: KdnConfig): Promise<Engine> {
  const hotTier = config.hotTierBytes === undefined ? {} : { hotTierBytes: config.hotTierBytes };
  const kvBudget = config.engineKvBudget !== undefined ? { kvBudgetTokens: config.engineKvBudget } : {};
  const batching = { maxSequences: config.engineBatch, ...kvBudget };
  const engineOptions = { modelDir: config.model, backend: config.backend, batching, ...hotTier };
  const engine: Engine = config.engineThread ? await createEngineInWorker(engineOptions) : await createEngine(engineOptions);
  if (config.chunkTokens + 1 > engine.info.maxPositionEmbeddings) {
    await engine.dispose();
    const limit = engine.info.maxPositionEmbeddings;
    throw new KdnError('INVALID_ARGUMENT', `chunks of ${config.chunkTokens} tokens do not fit the model's ${limit} positions`, {
      hint: 'lower --chunk-tokens',
    });
  }
  return engine;
}

/**
 * The edges kdn talks to: the configured ones, or when there are none an embedded one with a fresh secret (nothing
 * outside this process talks to it on kdn's behalf, so a secret per run will do).
 */
async function edgesOf(
  config: KdnConfig,
  origin: ObjectStore,
  log: Logger,
  cleanup: (() => Promise<void>)[],
): Promise<{ embeddedEdge: RunningEdge | undefined; edgeSecret: string | undefined }> {
  if (config.edges.length > 0) {
    if (config.edgeSecret === undefined) {
      log.warn('no edge secret (KDN_EDGE_SECRET): edge requests are not signed, so only edges run with --insecure-no-auth will answer');
    }
    return { embeddedEdge: undefined, edgeSecret: config.edgeSecret };
  }
  const edgeSecret = randomBytes(32).toString('hex');
  const embeddedEdge = await startEmbeddedEdge(config, origin, edgeSecret, log);
  cleanup.push(() => embeddedEdge.close());
  return { embeddedEdge, edgeSecret };
}

/** The edge `kdn serve` runs inside its own process when no edges are configured: loopback only, signed requests. */
function startEmbeddedEdge(config: KdnConfig, origin: ObjectStore, secret: string, log: Logger): Promise<RunningEdge> {
  const edgeConfig = {
    port: 0,
    host: '127.0.0.1',
    memoryBytes: config.edgeMemoryBytes,
    diskBytes: config.edgeDiskBytes,
    diskPath: config.edgeDiskPath,
    ...(config.edgeShmDir === 'off' ? {} : { shmDir: config.edgeShmDir }),
    secret,
    insecureNoAuth: false,
    publicMetrics: false,
  };
  return startEdge(edgeConfig, { origin, log: log.child({ part: 'edge' }) });
}

/** The API's HTTP server, listening. */
async function serveApi(config: KdnConfig, services: ApiServices): Promise<{ server: Server; url: string; port: number }> {
  const headersTimeout = Math.min(config.headersTimeoutMs, config.requestTimeoutMs);
  const server = createServer(
    {
      requestTimeout: config.requestTimeoutMs,
      headersTimeout,
      // Node checks the two timeouts above only this often (30 s by default).
      connectionsCheckingInterval: Math.max(50, Math.min(1_000, Math.floor(headersTimeout / 4))),
      // Node's 5 s default races clients that reuse a connection just as a long engine step holds the event loop
      // past it: the idle timer fires before the waiting request is read, and the client sees ECONNRESET.
      keepAliveTimeout: KEEP_ALIVE_TIMEOUT_MS,
    },
    createApp(services),
  );
  capConnectionsPerAddress(server, config.maxConnectionsPerAddress);
  await listen(server, config.port, config.host);
  const { port } = server.address() as AddressInfo;
  const host = config.host.includes(':') ? `[${config.host}]` : config.host === '0.0.0.0' ? '127.0.0.1' : config.host;
  return { server, url: `http://${host}:${port}`, port };
}

/**
 * Starts the control plane: opens the origin, loads the API keys and the chunk-salt secret (kdn/auth), starts an
 * embedded edge (with a random secret) when no edges are configured, loads the engine, rebuilds the catalog and
 * retrieval index from the manifests at the origin, then listens.
 */
export async function startKdn(config: KdnConfig, log: Logger = createLogger('kdn')): Promise<RunningKdn> {
  const configuredCodec = codecFromString(config.codec);
  const origin = openStore(config.origin);
  const cleanup: (() => Promise<void>)[] = [() => origin.close()];
  const undo = async (): Promise<void> => {
    for (const step of cleanup.reverse()) await step().catch(() => {});
  };
  try {
    const engine = await startEngine(config);
    cleanup.push(() => engine.dispose());
    const codecs = await codecsOf(config, configuredCodec, origin, engine, log);
    const access = await loadAccess(config, origin, log);
    const { embeddedEdge, edgeSecret, edges, fetcher, spool } = await deliveryOf(config, origin, engine, log, cleanup);
    const metrics = new KdnMetrics(() => engine.work());
    if (spool) metrics.watchSpool(spool);
    const scheduler = new EngineScheduler({
      maxWaitingPerTenant: config.tenantMaxQueries,
      maxInteractive: config.engineBatch,
      onDepth: (depth) => metrics.queueDepth.set(depth),
    });
    const catalog = new Catalog(origin, log);
    const documents = await catalog.load();
    const ingest = { engine, origin, edges, catalog, ...codecs, chunkBudget: config.chunkTokens, log };
    const { jobs, repair } = ingestOf(config, ingest, scheduler, metrics, cleanup);
    const queries = new QueryService({
      engine,
      fetcher,
      catalog,
      scheduler,
      metrics,
      log,
      queryTimeoutMs: config.queryTimeoutMs,
      onCorrupt: (key) => void repair.report(key),
      delivery: new DeliveryEstimate(),
      edgeOf: (key) => edges.order(key)[0],
      ...(config.ttftTargetMs === undefined ? {} : { ttftTargetMs: config.ttftTargetMs }),
    });
    const parts: KdnParts = { config, engine, origin, edges, catalog, scheduler, jobs, queries, metrics, access, log };
    const { server, url, port } = await serveApi(config, apiServices(parts, codecs, edgeSecret));
    log.info(
      { url, origin: origin.description, edges: edges.edges, model: engine.info.path, backend: engine.backend, documents },
      'kdn listening',
    );

    let closing: Promise<void> | undefined;
    const close = (): Promise<void> => {
      closing ??= (async () => {
        await drain(server, { scheduler, jobs, queries, engine, log }, config.shutdownTimeoutMs);
        await undo();
      })();
      return closing;
    };
    return { url, port, parts, embeddedEdge, close };
  } catch (err) {
    await undo();
    throw err;
  }
}

/**
 * The codec objects are written with and the lower levels a query may fall back to. A transform codec encodes with
 * the model's table: the origin's, or one fitted now and stored there.
 */
async function codecsOf(
  config: KdnConfig,
  configured: CodecSpec,
  origin: ObjectStore,
  engine: Engine,
  log: Logger,
): Promise<{ codec: CodecSpec; levels: CodecSpec[] }> {
  const levelCodecs = config.codecLevels.map((level) => codecFromString(level));
  const needsTable = [configured, ...levelCodecs].some((c) => c.name === 'transform');
  const table = needsTable ? (await loadOrFitTable(origin, engine, log)).hash : undefined;
  const withTable = (c: CodecSpec): CodecSpec => (c.name === 'transform' ? { ...c, table: table! } : c);
  return { codec: withTable(configured), levels: levelCodecs.map(withTable) };
}

/** The edges kdn talks to, and the fetcher a query receives chunk objects through (transform tables included). */
async function deliveryOf(config: KdnConfig, origin: ObjectStore, engine: Engine, log: Logger, cleanup: (() => Promise<void>)[]) {
  const { embeddedEdge, edgeSecret } = await edgesOf(config, origin, log, cleanup);
  const edgeOptions = { edges: embeddedEdge ? [embeddedEdge.url] : config.edges, ...(edgeSecret ? { secret: edgeSecret } : {}) };
  const edges = new EdgeClient(edgeOptions);
  cleanup.push(async () => edges.close());
  const receiving = receivingFetcher(config, edgeOptions, edges, engine.backend);
  cleanup.push(() => receiving.close());
  const spool = receiving instanceof KvFetchPool ? () => receiving.spool : undefined;
  // Tables are control objects (edges serve chunk objects only): read from the origin, once each.
  const tables = new TransformTableLoader((hash) => origin.get(transformTableKey(engine.info.fingerprint, hash)), engine, receiving);
  return { embeddedEdge, edgeSecret, edges, fetcher: withTransformTables(receiving, tables), spool };
}

/** Ingest jobs and chunk repair, over two ingest threads (`cleanup` closes them). */
function ingestOf(
  config: KdnConfig,
  parts: Omit<IngestContext, 'turn' | 'tokenize' | 'encode'>,
  scheduler: EngineScheduler,
  metrics: KdnMetrics,
  cleanup: (() => Promise<void>)[],
): { jobs: IngestJobs; repair: ChunkRepair } {
  // Two threads, so encoding one document's objects never waits behind tokenizing another document.
  const tokenizing = new IngestThread(config.model);
  const encoding = new IngestThread(config.model);
  cleanup.push(
    () => tokenizing.close(),
    () => encoding.close(),
  );
  const context: Omit<IngestContext, 'turn'> = {
    ...parts,
    tokenize: (text: string, budget: number) => tokenizing.tokenize(text, budget),
    encode: (tensors: KVTensors, meta: EncodeMeta) => encoding.encode(tensors, meta),
  };
  const limits = { maxJobsPerTenant: config.tenantMaxJobs, maxBytesPerTenant: config.tenantMaxIngestBytes, running: INGEST_JOBS_RUNNING };
  const jobs = new IngestJobs(context, scheduler, limits, (job) => {
    metrics.ingestObjects.inc({ outcome: 'computed' }, job.progress.objects.computed);
    metrics.ingestObjects.inc({ outcome: 'skipped' }, job.progress.objects.skipped);
  });
  return { jobs, repair: new ChunkRepair(context, scheduler) };
}

/**
 * What receives and verifies chunk objects: fetch threads (config.fetchThreads, default by cores), or the event loop.
 * Only a WebGPU engine's staging reads spooled blocks on libuv's pool; the CPU engine would copy them on its own
 * thread all the same, so for it they go with their bytes.
 */
function receivingFetcher(config: KdnConfig, edgeOptions: WorkerEdgeOptions, edges: EdgeClient, backend: Engine['backend']): KvFetcher {
  const threads = config.fetchThreads ?? defaultFetchThreads();
  if (threads === 0) return inThreadFetcher(edges);
  // An engine on the event loop reads every object here; one on its own thread gets them routed from the workers.
  return new KvFetchPool(edgeOptions, threads, {
    receiveBufferBytes: config.fetchBufferBytes,
    spoolBytes: backend === 'webgpu' ? config.fetchSpoolBytes : 0,
    deliverEagerly: !config.engineThread,
    verifyAlongside: config.shmVerify === 'alongside',
  });
}

/** The API's services by role (kdn/services/), each given only the parts it uses. */
function apiServices(parts: KdnParts, codecs: { codec: CodecSpec; levels: CodecSpec[] }, edgeSecret: string | undefined): ApiServices {
  const { codec, levels } = codecs;
  const { config, engine, origin, edges, catalog, scheduler, jobs, queries, metrics, access, log } = parts;
  const { tenancy, salts } = access;
  const admission = new UploadAdmission({ engine, codec, levels, catalog, jobs }, config);
  return {
    documents: new DocumentService({ catalog, jobs, edges, origin, tenancy, salts, admission, log, maxUploadBytes: config.maxUploadBytes }),
    queries: new AnswerService({ queries, tenancy, engine }),
    jobs: new JobService({ ingest: jobs, queries, tenancy }),
    operations: new OperationsService({
      engine,
      origin,
      edges,
      catalog,
      scheduler,
      codec,
      chunkTokens: config.chunkTokens,
      registry: metrics.registry,
      metricsPublic: access.metricsPublic,
      tenancy,
      salts,
      edgeSecret,
    }),
    access,
    metrics,
    log,
  };
}

/** Ingest jobs running at once: one computes while another stores its objects. */
const INGEST_JOBS_RUNNING = 2;
/** After the shutdown bound, how long cancelled work gets to notice before kdn closes under it. */
const CANCEL_GRACE_MS = 2_000;

/**
 * Graceful stop: no new connections; queued work is refused (503) and ingest jobs stop at their next chunk (objects
 * are written whole and the manifest last, so nothing is left half written; uploading again resumes); the task on
 * the engine finishes. Past `boundMs`, queries still running are cancelled, and if the engine is still computing
 * it is disposed. Then every connection is closed.
 */
async function drain(
  server: Server,
  parts: { scheduler: EngineScheduler; jobs: IngestJobs; queries: QueryService; engine: Engine; log: Logger },
  boundMs: number,
): Promise<void> {
  const stopping = new KdnError('ENGINE_UNAVAILABLE', 'kdn is shutting down', {
    hint: 'send the request again once kdn is back, or to another kdn',
  });
  const connectionsClosed = new Promise<void>((resolve) => server.close(() => resolve()));
  const drained = Promise.all([parts.jobs.close(stopping), parts.scheduler.close(stopping)]).then(() => true);
  if (!(await within(drained, boundMs))) {
    parts.log.warn({ boundMs }, 'work still running at the shutdown bound; cancelling it');
    parts.queries.cancelAll(stopping);
    // A forward cannot stop midway; disposing the engine ends it (on its thread), and its caller fails with 503.
    if (!(await within(drained, CANCEL_GRACE_MS))) {
      await parts.engine.dispose();
      await within(drained, CANCEL_GRACE_MS);
    }
  }
  // Answers of the work that just finished are on their way out; give them a moment before closing the sockets.
  await within(
    connectionsClosed.then(() => true),
    CANCEL_GRACE_MS,
  );
  server.closeAllConnections();
}

/** Whether `promise` settled within `ms`. */
async function within(promise: Promise<boolean>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<boolean>((resolve) => {
    timer = setTimeout(() => resolve(false), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}
