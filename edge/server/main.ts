import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { KdnError } from '../../common/errors.ts';
import { listen } from '../../common/listen.ts';
import { createLogger, type Logger } from '../../common/log.ts';
import type { EdgeStats } from '../protocol.ts';
import type { ObjectStore } from '../../storage/object-store.ts';
import { openStore } from '../../storage/open-store.ts';
import { checkEdgeAuthConfig } from './auth.ts';
import { resolveEdgeConfig, type EdgeConfig, type EdgeConfigInput } from './config.ts';
import { DiskTier } from './disk-tier.ts';
import { MemoryTier } from './memory-tier.ts';
import { createEdgeMetrics } from './metrics.ts';
import { Origin } from './origin.ts';
import { ShmMirror } from './shm-mirror.ts';
import { createEdgeServer } from './server.ts';
import { edgeStats, newServeCounters } from './stats.ts';
import { TieredCache } from './tiered-cache.ts';

const CLOSE_GRACE_MS = 1_000;

export interface RunningEdge {
  /** Base URL, e.g. http://127.0.0.1:8790 */
  url: string;
  port: number;
  config: EdgeConfig;
  stats(): EdgeStats;
  /** The shared-memory mirror of the memory tier (config.shmDir), if any. */
  shm: ShmMirror | undefined;
  /**
   * Stops listening, lets requests in flight finish (1 s at most), removes the shared-memory folder, releases the
   * disk lock and closes the origin store if this edge opened it.
   */
  close(): Promise<void>;
}

export interface EdgeDeps {
  /** An origin store to use instead of opening config.originUrl (the caller keeps ownership and closes it). */
  origin?: ObjectStore;
  log?: Logger;
}

/**
 * Starts one edge: opens the origin and the disk tier, then listens. Used by `kdn edge` and embedded by `kdn serve`.
 * Values missing from `input` come from KDN_EDGE_* environment variables, then defaults (see config.ts). Refuses
 * to start without a `secret` unless `insecureNoAuth` is set (auth.ts).
 */
export async function startEdge(input: Partial<EdgeConfigInput>, deps: EdgeDeps = {}): Promise<RunningEdge> {
  const config = resolveEdgeConfig(deps.origin && input.originUrl === undefined ? { ...input, originUrl: deps.origin.description } : input);
  checkEdgeAuthConfig(config);
  const log = deps.log ?? createLogger('edge');
  const store = deps.origin ?? openStore(config.originUrl);
  // What this edge opened, closed in reverse when it stops or fails to start.
  const opened: (() => Promise<void>)[] = deps.origin === undefined ? [() => store.close()] : [];
  const release = async (): Promise<void> => {
    for (const close of opened.reverse()) await close();
  };
  try {
    const disk = await DiskTier.open(config.diskPath, config.diskBytes);
    opened.push(() => disk.close());
    const shm = config.shmDir !== undefined && config.memoryBytes > 0 ? await ShmMirror.open(config.shmDir, log) : undefined;
    if (shm) opened.push(() => shm.close());
    const cache = new TieredCache(
      {
        memory: new MemoryTier(config.memoryBytes, shm),
        disk,
        origin: new Origin(store, { timeoutMs: config.originTimeoutMs, negativeTtlMs: config.negativeTtlMs }),
      },
      log,
    );
    const served = newServeCounters();
    const startedAt = Date.now();
    const stats = (): EdgeStats => edgeStats(cache, served, startedAt, shm);
    const metrics = createEdgeMetrics(stats);
    const server = createEdgeServer({ cache, config, served, stats, metrics, log, shm: shm?.info ?? { dir: null } });
    const { url, port } = await listenOn(server, config);
    if (config.secret === undefined)
      log.warn(
        { url },
        'edge running WITHOUT authentication (--insecure-no-auth): anyone who reaches it can read, write and purge objects',
      );
    const { memoryBytes, diskBytes, diskPath } = config;
    log.info({ url, origin: store.description, memoryBytes, diskBytes, diskPath, shmDir: shm?.dir }, 'edge listening');

    let closing: Promise<void> | undefined;
    const close = (): Promise<void> => {
      closing ??= stopServing(server).then(release);
      return closing;
    };
    return { url, port, config, stats, shm, close };
  } catch (err) {
    await release();
    throw err;
  }
}

/** Listens on config's host and port; a port in use is a CONFLICT that says what to do. */
async function listenOn(server: Server, config: EdgeConfig): Promise<{ url: string; port: number }> {
  try {
    await listen(server, config.port, config.host);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EADDRINUSE') {
      throw new KdnError('CONFLICT', `${config.host}:${config.port} is already in use`, {
        hint: 'pick another --port, or 0 for any free port',
        cause: err,
      });
    }
    throw err;
  }
  const { port } = server.address() as AddressInfo;
  const host = config.host.includes(':') ? `[${config.host}]` : config.host;
  return { url: `http://${host}:${port}`, port };
}

/** Stops listening: requests in flight get a short grace period to finish; idle keep-alive connections go at once. */
function stopServing(server: Server): Promise<void> {
  return new Promise<void>((resolve) => {
    const grace = setTimeout(() => server.closeAllConnections(), CLOSE_GRACE_MS);
    server.close(() => {
      clearTimeout(grace);
      resolve();
    });
    server.closeIdleConnections();
  });
}
