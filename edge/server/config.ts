import { homedir } from 'node:os';
import { join } from 'node:path';
import { z } from 'zod';
import { MIN_EDGE_SECRET_LENGTH } from '../../common/edge-token.ts';
import { byteSize as size } from '../../common/byte-size.ts';
import { resolveConfig } from '../../common/resolve-config.ts';
import { secretFromFlagOrFile } from '../../common/secret-file.ts';
import { DEFAULT_FAILED_AUTH_LIMIT, failedAuthLimitSchema } from '../../common/failed-auth-throttle.ts';

const milliseconds = z.coerce.number().int().min(0);

/** Booleans from flags (true) or the environment ("true"/"false"/"1"/"0"). */
const flag = z
  .union([z.boolean(), z.enum(['true', 'false', '1', '0'])])
  .transform((value) => value === true || value === 'true' || value === '1');

/** Everything an edge needs to start. Sizes accept numbers of bytes or strings like "512MiB". */
export const EdgeConfigSchema = z.object({
  /** 0 picks a free port. */
  port: z.coerce.number().int().min(0).max(65535).default(8790),
  host: z.string().min(1).default('127.0.0.1'),
  /** Memory tier budget; 0 disables the tier. */
  memoryBytes: size.default(512 * 2 ** 20),
  /** Disk tier budget; 0 disables the tier. */
  diskBytes: size.default(4 * 2 ** 30),
  diskPath: z
    .string()
    .min(1)
    .default(join(homedir(), '.cache', 'kdn', 'edge')),
  /**
   * A tmpfs directory (e.g. /dev/shm) under which the edge mirrors its memory tier in a private folder, so kdn on
   * the same host reads objects without a socket (edge/protocol.ts ShmInfo). Unset: off.
   */
  shmDir: z.string().min(1).optional(),
  /** An object-store URL for storage/open-store.ts: `file:/path` or `s3://bucket/prefix?endpoint=...`. */
  originUrl: z.string({ error: 'no origin given: pass --origin (or KDN_EDGE_ORIGIN) as file:/path or s3://bucket?endpoint=...' }).min(1),
  /** How long a key the origin does not have is answered 404 without asking the origin again. */
  negativeTtlMs: milliseconds.default(2_000),
  /** Bound on one origin request; past it a miss answers 504. */
  originTimeoutMs: milliseconds.min(1).default(5_000),
  /** Largest PUT body accepted (413 above it). */
  maxBodyBytes: size.default(1 * 2 ** 30),
  /** Time a client has to send a whole request (node's server.requestTimeout), and its headers. */
  requestTimeoutMs: milliseconds.min(1).default(60_000),
  headersTimeoutMs: milliseconds.min(1).default(10_000),
  /** A socket idle this long (a client that stopped reading or sending) is closed. */
  idleTimeoutMs: milliseconds.min(1).default(30_000),
  /** Shared with kdn, which signs every request with it (common/edge-token.ts). */
  secret: z.string().min(MIN_EDGE_SECRET_LENGTH, `the edge secret must be at least ${MIN_EDGE_SECRET_LENGTH} characters`).optional(),
  /** A file holding the secret (mode 0600), which keeps it out of the process list and the environment. */
  secretFile: z.string().min(1).optional(),
  /** Run without a secret, answering anyone: for trusted test networks only. */
  insecureNoAuth: flag.default(false),
  /** Leave /stats and /metrics open without a token. */
  publicMetrics: flag.default(false),
  /** Failed token checks one address may make, "<per second>[,<burst>]"; past them it is answered 429. */
  failedAuthLimit: failedAuthLimitSchema.default(DEFAULT_FAILED_AUTH_LIMIT),
  /** Connections one remote address may hold open; kdn opens up to 32 per fetch thread plus 32. */
  maxConnectionsPerAddress: z.coerce.number().int().min(1).default(1_024),
});

export type EdgeConfig = z.output<typeof EdgeConfigSchema>;
export type EdgeConfigInput = z.input<typeof EdgeConfigSchema>;

/** Environment variables read when a flag is not given, by config field. */
export const EDGE_ENV: Record<keyof EdgeConfig, string> = {
  port: 'KDN_EDGE_PORT',
  host: 'KDN_EDGE_HOST',
  memoryBytes: 'KDN_EDGE_MEMORY',
  diskBytes: 'KDN_EDGE_DISK',
  diskPath: 'KDN_EDGE_DISK_PATH',
  shmDir: 'KDN_EDGE_SHM_DIR',
  originUrl: 'KDN_EDGE_ORIGIN',
  negativeTtlMs: 'KDN_EDGE_NEGATIVE_TTL_MS',
  originTimeoutMs: 'KDN_EDGE_ORIGIN_TIMEOUT_MS',
  maxBodyBytes: 'KDN_EDGE_MAX_BODY',
  requestTimeoutMs: 'KDN_EDGE_REQUEST_TIMEOUT_MS',
  headersTimeoutMs: 'KDN_EDGE_HEADERS_TIMEOUT_MS',
  idleTimeoutMs: 'KDN_EDGE_IDLE_TIMEOUT_MS',
  secret: 'KDN_EDGE_SECRET',
  secretFile: 'KDN_EDGE_SECRET_FILE',
  insecureNoAuth: 'KDN_EDGE_INSECURE_NO_AUTH',
  publicMetrics: 'KDN_EDGE_PUBLIC_METRICS',
  failedAuthLimit: 'KDN_EDGE_FAILED_AUTH_LIMIT',
  maxConnectionsPerAddress: 'KDN_EDGE_MAX_CONNECTIONS_PER_ADDRESS',
};

/** Validates a config; values missing from `input` come from the environment, then from the defaults. */
export function resolveEdgeConfig(input: Partial<EdgeConfigInput>, env: NodeJS.ProcessEnv = process.env): EdgeConfig {
  const hint = `pass flags (kdn edge --help) or set ${Object.values(EDGE_ENV).slice(0, 6).join(', ')}, ...`;
  const config = resolveConfig(EdgeConfigSchema, EDGE_ENV, input, env, 'edge', hint);
  const secret = secretFromFlagOrFile(config.secret, config.secretFile, 'edge secret');
  if (secret === config.secret) return config;
  return {
    ...config,
    secret: resolveConfig(EdgeConfigSchema.pick({ secret: true }), { secret: 'KDN_EDGE_SECRET_FILE' }, { secret }, {}, 'edge', hint).secret,
  };
}
