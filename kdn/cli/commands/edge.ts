import type { Command } from 'commander';
import { EDGE_ENV, type EdgeConfigInput } from '../../../edge/server/config.ts';
import { startEdge } from '../../../edge/server/main.ts';
import { portFlag } from '../port-flag.ts';
import { untilSignal } from '../until-signal.ts';

interface EdgeFlags {
  port?: string;
  host?: string;
  memory?: string;
  disk?: string;
  diskPath?: string;
  shmDir?: string;
  origin?: string;
  negativeTtl?: string;
  originTimeout?: string;
  maxBody?: string;
  edgeSecret?: string;
  edgeSecretFile?: string;
  insecureNoAuth?: boolean;
  publicMetrics?: boolean;
  json?: boolean;
}

/**
 * `kdn edge`: runs one edge cache server until SIGINT/SIGTERM. With --json it prints exactly one line,
 * {"ready":true,"url":...,"port":...}, once it listens, so a parent process can start it on --port 0 and learn the port.
 */
async function runEdge(flags: EdgeFlags): Promise<void> {
  const input: Partial<EdgeConfigInput> = {
    port: flags.port,
    host: flags.host,
    memoryBytes: flags.memory,
    diskBytes: flags.disk,
    diskPath: flags.diskPath,
    shmDir: flags.shmDir,
    originUrl: flags.origin,
    negativeTtlMs: flags.negativeTtl,
    originTimeoutMs: flags.originTimeout,
    maxBodyBytes: flags.maxBody,
    secret: flags.edgeSecret,
    secretFile: flags.edgeSecretFile,
    insecureNoAuth: flags.insecureNoAuth,
    publicMetrics: flags.publicMetrics,
  };
  const edge = await startEdge(Object.fromEntries(Object.entries(input).filter(([, value]) => value !== undefined)));
  if (flags.json) {
    process.stdout.write(`${JSON.stringify({ ready: true, url: edge.url, port: edge.port })}\n`);
  } else {
    process.stdout.write(`kdn edge listening on ${edge.url} (origin ${edge.stats().origin.description})\n`);
  }
  await untilSignal(() => edge.close());
}

export function register(program: Command): void {
  program
    .command('edge')
    .description('run an edge cache server: memory and disk tiers in front of an origin object store')
    .option('--port <port>', `port to listen on, 0 for any free port (env ${EDGE_ENV.port}; default 8790)`, portFlag)
    .option('--host <host>', `address to listen on (env ${EDGE_ENV.host}; default 127.0.0.1)`)
    .option('--memory <size>', `memory tier budget like 512MiB, 0 disables (env ${EDGE_ENV.memoryBytes}; default 512MiB)`)
    .option('--disk <size>', `disk tier budget like 4GiB, 0 disables (env ${EDGE_ENV.diskBytes}; default 4GiB)`)
    .option('--disk-path <dir>', `disk tier folder, one per edge (env ${EDGE_ENV.diskPath}; default ~/.cache/kdn/edge)`)
    .option(
      '--shm-dir <dir>',
      `tmpfs folder (e.g. /dev/shm) to mirror the memory tier in for same-host kdn (env ${EDGE_ENV.shmDir}; default off)`,
    )
    .option('--origin <url>', `origin store: file:/path or s3://bucket/prefix?endpoint=... (env ${EDGE_ENV.originUrl}; required)`)
    .option('--negative-ttl <ms>', `how long origin misses are remembered (env ${EDGE_ENV.negativeTtlMs}; default 2000)`)
    .option('--origin-timeout <ms>', `bound on one origin request (env ${EDGE_ENV.originTimeoutMs}; default 5000)`)
    .option('--max-body <size>', `largest PUT body (env ${EDGE_ENV.maxBodyBytes}; default 1GiB)`)
    .option(
      '--edge-secret <secret>',
      `secret shared with kdn, which signs every request with it (env ${EDGE_ENV.secret}; required unless --insecure-no-auth); other local users see flags, prefer the file or env`,
    )
    .option('--edge-secret-file <file>', `file (mode 0600) holding the edge secret (env ${EDGE_ENV.secretFile})`)
    .option('--insecure-no-auth', `answer requests without a kdn token: trusted test networks only (env ${EDGE_ENV.insecureNoAuth})`)
    .option('--public-metrics', `leave /stats and /metrics open without a token (env ${EDGE_ENV.publicMetrics})`)
    .option('--json', 'print one JSON ready line instead of text')
    .action(runEdge);
}
