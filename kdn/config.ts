import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { z } from 'zod';
import { KdnError } from '../common/errors.ts';
import { MIN_EDGE_SECRET_LENGTH } from '../common/edge-token.ts';
import { byteSize as size } from '../common/byte-size.ts';
import { resolveConfig } from '../common/resolve-config.ts';
import { secretFromFlagOrFile } from '../common/secret-file.ts';
import { DEFAULT_FAILED_AUTH_LIMIT, failedAuthLimitSchema } from '../common/failed-auth-throttle.ts';
import { codecFromString, codecToString } from '../storage/kv-object/index.ts';
import { DEFAULT_MODEL_DIR } from './default-model.ts';

const edgeList = z.union([z.array(z.string()), z.string()]).transform((value, ctx) => {
  const items = (Array.isArray(value) ? value : value.split(',')).map((s) => s.trim()).filter((s) => s !== '');
  for (const item of items) {
    if (!/^https?:\/\/[^/\s]+\/?$/.test(item)) {
      ctx.addIssue({ code: 'custom', message: `edge "${item}" is not a base URL like http://host:port` });
      return z.NEVER;
    }
  }
  return items.map((item) => item.replace(/\/$/, ''));
});

/** A list of codecs as codecFromString reads them, each named once, written back in its canonical form. */
const codecList = z.union([z.array(z.string()), z.string()]).transform((value, ctx) => {
  const items = (Array.isArray(value) ? value : value.split(',')).map((s) => s.trim()).filter((s) => s !== '');
  const names: string[] = [];
  for (const item of items) {
    try {
      names.push(codecToString(codecFromString(item)));
    } catch {
      ctx.addIssue({
        code: 'custom',
        message: `"${item}" is not a codec (fp16, int8, int4, optionally +lz4, or transform[:x4|x6|x8|x12|x16|x20])`,
      });
      return z.NEVER;
    }
  }
  if (new Set(names).size !== names.length) {
    ctx.addIssue({ code: 'custom', message: `codec levels "${items.join(',')}" name one codec twice` });
    return z.NEVER;
  }
  return names;
});

const flag = z
  .union([z.boolean(), z.enum(['true', 'false', '1', '0'])])
  .transform((value) => value === true || value === 'true' || value === '1');

/** Requests per second and burst of one API key; perSecond 0 turns limiting off. */
export interface RateLimit {
  perSecond: number;
  burst: number;
}

/** Parses KDN_RATE_LIMIT: "<requests per second>[,<burst>]" (burst defaults to twice the rate; "0" is unlimited). */
export function parseRateLimit(text: string): RateLimit | undefined {
  const match = /^\s*(\d+(?:\.\d+)?)\s*(?:,\s*(\d+)\s*)?$/.exec(text);
  if (!match) return undefined;
  const perSecond = Number(match[1]);
  const burst = match[2] === undefined ? Math.max(1, Math.ceil(perSecond * 2)) : Number(match[2]);
  if (perSecond > 0 && burst < 1) return undefined;
  return { perSecond, burst };
}

const rateLimit = z.string().transform((value, ctx) => {
  const parsed = parseRateLimit(value);
  if (!parsed) {
    ctx.addIssue({ code: 'custom', message: `"${value}" is not "<requests per second>[,<burst>]"` });
    return z.NEVER;
  }
  return parsed;
});

const milliseconds = z.coerce.number().int().min(1);

/** The control plane's settings: flags first, then KDN_* environment variables, then these defaults. */
export const KdnConfigSchema = z.object({
  dataDir: z.string().min(1).default('./data'),
  /** Object-store URL of the origin; defaults to a file store under the data directory. */
  origin: z.string().min(1).optional(),
  /** Edge base URLs; empty starts one edge inside the kdn process. */
  edges: edgeList.default([]),
  model: z.string().min(1).default(DEFAULT_MODEL_DIR),
  backend: z.enum(['auto', 'webgpu', 'cpu']).default('auto'),
  /** Most tokens in one knowledge chunk. */
  chunkTokens: z.coerce.number().int().min(8).max(8192).default(256),
  /**
   * Codec of stored chunk KV, as codecFromString reads it: fp16, int8, int4, each optionally "+lz4", or
   * transform[:level] (x4, x6, x8, x12, x16, x20; the model's transform table is fitted on first start).
   */
  codec: z.string().min(1).default('int8'),
  /**
   * Extra quality levels ingest stores beside `codec` for every chunk, e.g. "transform:x4,transform:x16"; a query
   * with a TTFT target picks among them by measured delivery throughput (kdn/query/level-policy.ts).
   */
  codecLevels: codecList.default([]),
  /** Time to first token a query aims for when picking each chunk's level; absent always uses `codec`. */
  ttftTargetMs: z.coerce.number().int().min(1).max(600_000).optional(),
  port: z.coerce.number().int().min(0).max(65535).default(8080),
  host: z.string().min(1).default('127.0.0.1'),
  /** Largest document upload accepted. */
  maxUploadBytes: size.default(8 * 2 ** 20),
  /** Most tokens and (estimated) KV bytes one upload may make; checked before any KV is computed. */
  maxUploadTokens: z.coerce.number().int().min(1).default(2_000_000),
  maxUploadKvBytes: size.default(16 * 2 ** 30),
  /** What one tenant may hold in all (stored documents plus running uploads). */
  tenantQuotaTokens: z.coerce.number().int().min(1).default(20_000_000),
  tenantQuotaKvBytes: size.default(256 * 2 ** 30),
  /** Budgets of the embedded edge (only used when `edges` is empty). */
  edgeMemoryBytes: size.default(512 * 2 ** 20),
  edgeDiskBytes: size.default(4 * 2 ** 30),
  /** Disk tier directory of the embedded edge; defaults to <dataDir>/edge. */
  edgeDiskPath: z.string().min(1).optional(),
  /**
   * tmpfs folder the embedded edge mirrors its memory tier in, which kdn then reads without a socket; "off" for
   * none. Defaults to /dev/shm where it exists.
   */
  edgeShmDir: z
    .string()
    .min(1)
    .default(existsSync('/dev/shm') ? '/dev/shm' : 'off'),
  /** API keys as "key1=tenantA,key2=tenantB"; with no keys from here or a file, kdn generates one (kdn/auth). */
  apiKeys: z.string().optional(),
  /** JSON file {"keys": [{"key", "tenant"}]}, merged with apiKeys. */
  apiKeysFile: z.string().min(1).optional(),
  /** Shared with the edges, which accept only requests signed with it; the embedded edge gets a random one. */
  edgeSecret: z.string().min(MIN_EDGE_SECRET_LENGTH, `the edge secret must be at least ${MIN_EDGE_SECRET_LENGTH} characters`).optional(),
  /** A file holding the edge secret (mode 0600): keeps it out of the process list and the environment. */
  edgeSecretFile: z.string().min(1).optional(),
  /** "public=ownerA+ownerB,readonly": namespaces every tenant reads, written by their owners (kdn/auth/tenancy.ts). */
  sharedNamespaces: z.string().default(''),
  /** Per-API-key request rate, "<per second>[,<burst>]"; "0" turns it off. */
  rateLimit: rateLimit.default({ perSecond: 100, burst: 200 }),
  /** Leave GET /metrics open without a key. */
  metricsPublic: flag.default(false),
  /** Worker threads receiving and verifying chunk objects; 0 keeps it on the event loop; default by core count. */
  fetchThreads: z.coerce.number().int().min(0).max(64).optional(),
  /** Bytes each fetch thread keeps of the buffers the engine returns, to receive later objects into; 0 keeps none. */
  fetchBufferBytes: size.default(64 * 2 ** 20),
  /**
   * Bytes all fetch threads together may hold in /dev/shm of objects received over HTTP, which a WebGPU engine's
   * thread reads from there instead of copying them itself (kdn/query/receive-spool.ts); 0 for none.
   */
  fetchSpoolBytes: size.default(2 * 2 ** 30),
  /**
   * When fetch threads verify the layers of objects read from a same-host edge's shared memory for the engine's
   * thread: before handing each over, or alongside the engine's reads of them, which then computes with a layer only
   * once it is verified (kv-fetch-pool.ts FetchPoolOptions.verifyAlongside).
   */
  shmVerify: z.enum(['before', 'alongside']).default('before'),
  /** Bound on one query, queueing included (504 TIMEOUT past it). */
  queryTimeoutMs: milliseconds.default(120_000),
  /** Time a client has to send a whole request, and its headers (node's requestTimeout / headersTimeout). */
  requestTimeoutMs: milliseconds.default(300_000),
  headersTimeoutMs: milliseconds.default(30_000),
  /** Failed authentications one address may make, "<per second>[,<burst>]"; past them it is answered 429. */
  failedAuthLimit: failedAuthLimitSchema.default(DEFAULT_FAILED_AUTH_LIMIT),
  /** Connections one remote address may hold open at once. */
  maxConnectionsPerAddress: z.coerce.number().int().min(1).default(64),
  /**
   * Expanded KV the engine keeps on its device across queries (the hot tier), so a chunk queried again is placed
   * without a fetch; 0 turns it off. Default: half of a full-capacity session's KV (engine-adapter/hot-tier.ts).
   */
  hotTierBytes: size.optional(),
  /** Run the engine on its own thread, so its compute never holds the event loop that serves HTTP. */
  engineThread: flag.default(true),
  /**
   * Queries that may run on the engine at once, their decoding batched into shared forwards
   * (engine-adapter/decode-batcher.ts); 1 runs one query at a time.
   */
  engineBatch: z.coerce.number().int().min(1).max(256).default(16),
  /** KV tokens the queries decoding together may hold; one that does not fit waits. Default: no limit. */
  engineKvBudget: z.coerce.number().int().min(1).optional(),
  /** On SIGTERM: how long running work may take to finish before it is cancelled and kdn exits. */
  shutdownTimeoutMs: z.coerce.number().int().min(0).default(30_000),
  /** Queries one tenant may have waiting for the engine (429 past it). */
  tenantMaxQueries: z.coerce.number().int().min(1).default(64),
  /** Ingest jobs one tenant may have queued or running (429 past it). */
  tenantMaxJobs: z.coerce.number().int().min(1).default(32),
  /** Document bytes one tenant may have queued or running in ingest jobs (429 past it). */
  tenantMaxIngestBytes: size.default(32 * 2 ** 20),
});

export type KdnConfigInput = z.input<typeof KdnConfigSchema>;

export type KdnConfig = Omit<z.output<typeof KdnConfigSchema>, 'origin' | 'edgeDiskPath'> & {
  origin: string;
  edgeDiskPath: string;
};

/** Environment variable read for each setting when no flag gives it. */
export const KDN_ENV: Record<keyof KdnConfigInput, string> = {
  dataDir: 'KDN_DATA_DIR',
  origin: 'KDN_ORIGIN',
  edges: 'KDN_EDGES',
  model: 'KDN_MODEL',
  backend: 'KDN_BACKEND',
  chunkTokens: 'KDN_CHUNK_TOKENS',
  codec: 'KDN_CODEC',
  codecLevels: 'KDN_CODEC_LEVELS',
  ttftTargetMs: 'KDN_TTFT_TARGET_MS',
  port: 'KDN_PORT',
  host: 'KDN_HOST',
  maxUploadBytes: 'KDN_MAX_UPLOAD',
  maxUploadTokens: 'KDN_MAX_UPLOAD_TOKENS',
  maxUploadKvBytes: 'KDN_MAX_UPLOAD_KV',
  tenantQuotaTokens: 'KDN_TENANT_QUOTA_TOKENS',
  tenantQuotaKvBytes: 'KDN_TENANT_QUOTA_KV',
  edgeMemoryBytes: 'KDN_EDGE_MEMORY',
  edgeDiskBytes: 'KDN_EDGE_DISK',
  edgeDiskPath: 'KDN_EDGE_DISK_PATH',
  edgeShmDir: 'KDN_EDGE_SHM_DIR',
  apiKeys: 'KDN_API_KEYS',
  apiKeysFile: 'KDN_API_KEYS_FILE',
  edgeSecret: 'KDN_EDGE_SECRET',
  edgeSecretFile: 'KDN_EDGE_SECRET_FILE',
  sharedNamespaces: 'KDN_SHARED_NAMESPACES',
  rateLimit: 'KDN_RATE_LIMIT',
  metricsPublic: 'KDN_METRICS_PUBLIC',
  fetchThreads: 'KDN_FETCH_THREADS',
  fetchBufferBytes: 'KDN_FETCH_BUFFERS',
  fetchSpoolBytes: 'KDN_FETCH_SPOOL',
  shmVerify: 'KDN_SHM_VERIFY',
  queryTimeoutMs: 'KDN_QUERY_TIMEOUT_MS',
  requestTimeoutMs: 'KDN_REQUEST_TIMEOUT_MS',
  headersTimeoutMs: 'KDN_HEADERS_TIMEOUT_MS',
  failedAuthLimit: 'KDN_FAILED_AUTH_LIMIT',
  maxConnectionsPerAddress: 'KDN_MAX_CONNECTIONS_PER_ADDRESS',
  hotTierBytes: 'KDN_HOT_TIER',
  engineThread: 'KDN_ENGINE_THREAD',
  engineBatch: 'KDN_ENGINE_BATCH',
  engineKvBudget: 'KDN_ENGINE_KV_BUDGET',
  shutdownTimeoutMs: 'KDN_SHUTDOWN_TIMEOUT_MS',
  tenantMaxQueries: 'KDN_TENANT_MAX_QUERIES',
  tenantMaxJobs: 'KDN_TENANT_MAX_JOBS',
  tenantMaxIngestBytes: 'KDN_TENANT_MAX_INGEST_BYTES',
};

export function resolveKdnConfig(input: Partial<KdnConfigInput>, env: NodeJS.ProcessEnv = process.env): KdnConfig {
  const hint = 'see `kdn serve --help` for flags and the KDN_* environment variables';
  const parsed = resolveConfig(KdnConfigSchema, KDN_ENV, input, env, 'kdn', hint);
  const fromFile = secretFromFlagOrFile(parsed.edgeSecret, parsed.edgeSecretFile, 'edge secret');
  const edgeSecret =
    fromFile === parsed.edgeSecret
      ? fromFile
      : resolveConfig(
          KdnConfigSchema.pick({ edgeSecret: true }),
          { edgeSecret: 'KDN_EDGE_SECRET_FILE' },
          { edgeSecret: fromFile },
          {},
          'kdn',
          hint,
        ).edgeSecret;
  const config = { ...parsed, edgeSecret };
  checkCodecLevels(config.codec, config.codecLevels, hint);
  const dataDir = resolve(config.dataDir);
  return {
    ...config,
    dataDir,
    origin: config.origin ?? `file:${join(dataDir, 'origin')}`,
    edgeDiskPath: config.edgeDiskPath ?? join(dataDir, 'edge'),
  };
}

/** The main codec is stored anyway: naming it as an extra level too is a mistake worth saying. */
function checkCodecLevels(codec: string, levels: string[], hint: string): void {
  let main: string;
  try {
    main = codecToString(codecFromString(codec));
  } catch {
    return;
  }
  if (levels.includes(main)) {
    throw new KdnError('INVALID_ARGUMENT', `invalid kdn configuration: codecLevels names the main codec ${main}`, {
      hint: `list only levels besides --codec (${KDN_ENV.codecLevels}); ${hint}`,
    });
  }
}
