import type { Command } from 'commander';
import { isKdnError } from '../../../common/errors.ts';
import { KDN_ENV, resolveKdnConfig, type KdnConfig, type KdnConfigInput } from '../../config.ts';
import { startKdn, type RunningKdn } from '../../server.ts';
import { UsageError } from '../exit-codes.ts';
import { portFlag } from '../port-flag.ts';
import { untilSignal } from '../until-signal.ts';

interface ServeFlags {
  dataDir?: string;
  origin?: string;
  edges?: string;
  model?: string;
  backend?: string;
  chunkTokens?: string;
  codec?: string;
  codecLevels?: string;
  ttftTarget?: string;
  port?: string;
  host?: string;
  maxUpload?: string;
  edgeMemory?: string;
  hotTier?: string;
  edgeDisk?: string;
  edgeDiskPath?: string;
  edgeShmDir?: string;
  apiKeysFile?: string;
  edgeSecret?: string;
  edgeSecretFile?: string;
  sharedNamespaces?: string;
  rateLimit?: string;
  queryTimeout?: string;
  fetchThreads?: string;
  fetchBuffers?: string;
  fetchSpool?: string;
  shmVerify?: string;
  engineBatch?: string;
  engineKvBudget?: string;
  shutdownTimeout?: string;
  json?: boolean;
}

/**
 * `kdn serve`: the whole system in one process by default (file origin under the data directory, one embedded
 * edge, the engine on the best backend). With --json it prints exactly one line {"ready":true,"url":...} once
 * listening, for parent processes that start it on --port 0.
 */
async function serve(flags: ServeFlags): Promise<void> {
  const kdn = await startKdn(configFrom(inputFrom(flags)));
  announce(kdn, flags.json === true);
  await untilSignal(() => kdn.close());
}

/** The flags as kdn's configuration input (what they leave unset comes from the environment, then defaults). */
function inputFrom(flags: ServeFlags): Partial<KdnConfigInput> {
  return {
    dataDir: flags.dataDir,
    origin: flags.origin,
    edges: flags.edges,
    model: flags.model,
    backend: flags.backend as KdnConfigInput['backend'],
    chunkTokens: flags.chunkTokens,
    codec: flags.codec,
    codecLevels: flags.codecLevels,
    ttftTargetMs: flags.ttftTarget,
    port: flags.port,
    host: flags.host,
    maxUploadBytes: flags.maxUpload,
    edgeMemoryBytes: flags.edgeMemory,
    hotTierBytes: flags.hotTier,
    edgeDiskBytes: flags.edgeDisk,
    edgeDiskPath: flags.edgeDiskPath,
    edgeShmDir: flags.edgeShmDir,
    apiKeysFile: flags.apiKeysFile,
    edgeSecret: flags.edgeSecret,
    edgeSecretFile: flags.edgeSecretFile,
    sharedNamespaces: flags.sharedNamespaces,
    rateLimit: flags.rateLimit,
    queryTimeoutMs: flags.queryTimeout,
    fetchThreads: flags.fetchThreads,
    fetchBufferBytes: flags.fetchBuffers,
    fetchSpoolBytes: flags.fetchSpool,
    shmVerify: flags.shmVerify as KdnConfigInput['shmVerify'],
    engineBatch: flags.engineBatch,
    engineKvBudget: flags.engineKvBudget,
    shutdownTimeoutMs: flags.shutdownTimeout,
  };
}

/** Says where kdn serves: one JSON line with --json, else lines for a person (with a generated key once, at a terminal). */
function announce(kdn: RunningKdn, json: boolean): void {
  const { engine } = kdn.parts;
  const generated = kdn.parts.access.generated;
  // stderr carries JSON log lines only; what a person reads (the key included) goes to stdout.
  if (generated) kdn.parts.log.warn({ apiKeyFile: generated.path, tenant: 'default' }, 'no API keys configured: generated one key');
  if (json) {
    process.stdout.write(
      `${JSON.stringify({ ready: true, url: kdn.url, port: kdn.port, edges: kdn.parts.edges.edges, backend: engine.backend, ...(generated ? { apiKeyFile: generated.path } : {}) })}\n`,
    );
  } else {
    process.stdout.write(
      `kdn serving at ${kdn.url}\n` +
        `  model   ${engine.info.path} (${engine.backend}: ${engine.device})\n` +
        `  origin  ${kdn.parts.origin.description}\n` +
        `  edges   ${kdn.parts.edges.edges.join(', ')}${kdn.embeddedEdge ? ' (embedded)' : ''}\n` +
        (generated
          ? // The key goes to a person at a terminal, once, when it is made; after that it is read from its file.
            `no API keys configured; using one key for tenant "default" (role operator), saved to ${generated.path}${generated.fresh && process.stdout.isTTY ? ':' : ''}\n` +
            (generated.fresh && process.stdout.isTTY ? `  ${generated.key}\n` : '') +
            `  the kdn CLI on this machine reads it from there (same --data-dir or KDN_DATA_DIR); other clients send\n` +
            `  "Authorization: Bearer <key>". Configure your own with KDN_API_KEYS="key1=tenantA,key2=tenantB" or --api-keys-file\n`
          : '') +
        `try: npx kdn upload README.md && npx kdn query "What is KDN?"\n`,
    );
  }
}

/** Settings from flags and the environment: one that does not hold is a usage error, found before anything starts. */
function configFrom(input: Partial<KdnConfigInput>): KdnConfig {
  try {
    return resolveKdnConfig(Object.fromEntries(Object.entries(input).filter(([, v]) => v !== undefined)));
  } catch (err) {
    if (!isKdnError(err, 'INVALID_ARGUMENT')) throw err;
    throw new UsageError(err.message, err.hint);
  }
}

export function register(program: Command): void {
  program
    .command('serve')
    .description('run kdn: REST API, ingest, retrieval and queries, with an embedded edge unless --edges is given')
    .option('--data-dir <dir>', `data directory (env ${KDN_ENV.dataDir}; default ./data)`)
    .option(
      '--origin <url>',
      `origin store: file:/path or s3://bucket?endpoint=... (env ${KDN_ENV.origin}; default file:<data-dir>/origin)`,
    )
    .option('--edges <urls>', `comma-separated edge URLs; none starts one embedded edge (env ${KDN_ENV.edges})`)
    .option('--model <dir>', `model directory (env ${KDN_ENV.model}; default: the shipped reader model, models/kdn-reader)`)
    .option('--backend <name>', `auto, webgpu or cpu (env ${KDN_ENV.backend}; default auto)`)
    .option('--chunk-tokens <n>', `most tokens per knowledge chunk (env ${KDN_ENV.chunkTokens}; default 256)`)
    .option(
      '--codec <codec>',
      `codec of stored KV: fp16, int8, int4, optionally +lz4, or transform[:x4|x6|x8|x12|x16|x20] (env ${KDN_ENV.codec}; default int8)`,
    )
    .option(
      '--codec-levels <codecs>',
      `comma-separated extra quality levels stored beside --codec for every chunk, e.g. transform:x4,transform:x16 (env ${KDN_ENV.codecLevels}; default none)`,
    )
    .option(
      '--ttft-target <ms>',
      `time to first token queries aim for: each picks the best stored level whose fetch fits it at the measured delivery throughput (env ${KDN_ENV.ttftTargetMs}; default off: always --codec)`,
    )
    .option('--port <port>', `port, 0 for any free one (env ${KDN_ENV.port}; default 8080)`, portFlag)
    .option('--host <host>', `address to listen on (env ${KDN_ENV.host}; default 127.0.0.1)`)
    .option('--max-upload <size>', `largest document upload (env ${KDN_ENV.maxUploadBytes}; default 8MiB)`)
    .option('--edge-memory <size>', `embedded edge memory budget (env ${KDN_ENV.edgeMemoryBytes}; default 512MiB)`)
    .option(
      '--hot-tier <size>',
      `expanded KV the engine keeps across queries, 0 for none (env ${KDN_ENV.hotTierBytes}; default half a full session's KV)`,
    )
    .option('--edge-disk <size>', `embedded edge disk budget (env ${KDN_ENV.edgeDiskBytes}; default 4GiB)`)
    .option('--edge-disk-path <dir>', `embedded edge disk folder (env ${KDN_ENV.edgeDiskPath}; default <data-dir>/edge)`)
    .option(
      '--edge-shm-dir <dir>',
      `tmpfs folder the embedded edge shares objects with kdn through, "off" for sockets only (env ${KDN_ENV.edgeShmDir}; default /dev/shm)`,
    )
    .option(
      '--api-keys-file <file>',
      `API keys as JSON {"keys":[{"key","tenant"}]}, added to env KDN_API_KEYS="key=tenant,..." (env ${KDN_ENV.apiKeysFile}); none: one generated key`,
    )
    .option(
      '--edge-secret <secret>',
      `secret shared with the edges, which check a token signed with it on every request (env ${KDN_ENV.edgeSecret}; the embedded edge gets a random one); other local users see flags, prefer the file or env`,
    )
    .option('--edge-secret-file <file>', `file (mode 0600) holding the edge secret (env ${KDN_ENV.edgeSecretFile})`)
    .option(
      '--shared-namespaces <list>',
      `namespaces every tenant reads, "name=owner1+owner2,..." (owners write) (env ${KDN_ENV.sharedNamespaces})`,
    )
    .option(
      '--rate-limit <rate>',
      `requests per second per API key, "rate[,burst]", 0 for none (env ${KDN_ENV.rateLimit}; default 100,200)`,
    )
    .option(
      '--fetch-threads <n>',
      `worker threads receiving and verifying chunk objects, 0 for none (env ${KDN_ENV.fetchThreads}; default all cores but four or half of them, at most 12)`,
    )
    .option(
      '--fetch-buffers <size>',
      `buffers each fetch thread keeps to receive chunk objects into again, 0 for none (env ${KDN_ENV.fetchBufferBytes}; default 64MiB)`,
    )
    .option(
      '--fetch-spool <size>',
      `/dev/shm the fetch threads may fill with objects received over HTTP for the engine's thread to read, 0 for none (env ${KDN_ENV.fetchSpoolBytes}; default 2GiB)`,
    )
    .option(
      '--shm-verify <when>',
      `verify shared-memory objects' layers "before" the engine reads them or "alongside" (env ${KDN_ENV.shmVerify}; default before)`,
    )
    .option('--engine-batch <n>', `queries on the engine at once, decoding in batched steps (env ${KDN_ENV.engineBatch}; default 16)`)
    .option('--engine-kv-budget <tokens>', `KV tokens decoding queries may hold together (env ${KDN_ENV.engineKvBudget}; default no limit)`)
    .option('--query-timeout <ms>', `bound on one query, queueing included (env ${KDN_ENV.queryTimeoutMs}; default 120000)`)
    .option(
      '--shutdown-timeout <ms>',
      `on SIGTERM, how long running work may take before it is cancelled (env ${KDN_ENV.shutdownTimeoutMs}; default 30000)`,
    )
    .option('--json', 'print one JSON ready line instead of text')
    .action(serve);
}
