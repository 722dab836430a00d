/**
 * A warm edge for the TTFT benchmark: a file origin and a memory tier in a temp directory (disk tier off), so every
 * measured GET is a memory hit served over loopback HTTP, as from an edge beside the GPU. Placement 'process' runs
 * it as its own `kdn edge` process (as deployed: the edge's sends do not share the client's event loop); 'inline'
 * starts it in this process.
 */
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { pino } from 'pino';
import { EdgeClient } from '../../edge/client/client.ts';
import { startEdge } from '../../edge/server/main.ts';
import type { WorkerEdgeOptions } from '../../kdn/query/kv-fetch-protocol.ts';
import { startProcess } from '../../fixtures/processes.ts';

export const EDGE_PLACEMENTS = ['process', 'inline'] as const;
export type EdgePlacement = (typeof EDGE_PLACEMENTS)[number];

export interface BenchEdge {
  client: EdgeClient;
  /** What `client` was built from, for fetch workers that build their own. */
  clientOptions: WorkerEdgeOptions;
  close(): Promise<void>;
}

const KDN_BIN = fileURLToPath(new URL('../../bin/kdn.js', import.meta.url));

interface EdgeSetup {
  memoryBytes: number;
  maxBodyBytes: number;
  diskPath: string;
  originUrl: string;
  secret: string;
  /** Mirror the memory tier in shared memory here (the same-host fast path). */
  shmDir?: string;
}

/** Starts `kdn edge` and waits for its ready line; resolves with its URL and a stop function. */
async function startEdgeProcess(s: EdgeSetup): Promise<{ url: string; stop(): Promise<void> }> {
  const edge = await startProcess(
    [
      KDN_BIN,
      'edge',
      '--json',
      '--port',
      '0',
      '--host',
      '127.0.0.1',
      '--memory',
      String(s.memoryBytes),
      '--disk',
      '0',
      '--disk-path',
      s.diskPath,
      '--origin',
      s.originUrl,
      '--max-body',
      String(s.maxBodyBytes),
      '--edge-secret',
      s.secret,
      ...(s.shmDir ? ['--shm-dir', s.shmDir] : []),
    ],
    { env: { LOG_LEVEL: process.env.LOG_LEVEL ?? 'warn' } },
  );
  return { url: edge.ready.url, stop: () => edge.stop('SIGTERM') };
}

/** `memoryBytes` must hold every object the run puts, or GETs would fall through to the origin. */
/** `shm`: the edge mirrors its memory tier under /dev/shm (the temp folder where there is none) for same-host reads. */
export async function startBenchEdge(
  memoryBytes: number,
  maxObjectBytes: number,
  placement: EdgePlacement = 'process',
  shm = false,
): Promise<BenchEdge> {
  const dir = await mkdtemp(join(tmpdir(), 'kdn-bench-edge-'));
  const shmDir = !shm ? undefined : existsSync('/dev/shm') ? '/dev/shm' : join(dir, 'shm');
  if (shmDir) await mkdir(shmDir, { recursive: true });
  // Signed requests, as kdn sends them: token signing and checking are part of the measured path.
  const setup: EdgeSetup = {
    memoryBytes,
    maxBodyBytes: Math.max(maxObjectBytes, 1 << 20),
    diskPath: join(dir, 'disk'),
    originUrl: `file:${join(dir, 'origin')}`,
    secret: randomBytes(24).toString('hex'),
    ...(shmDir ? { shmDir } : {}),
  };
  let url: string;
  let stop: () => Promise<void>;
  try {
    if (placement === 'process') {
      ({ url, stop } = await startEdgeProcess(setup));
    } else {
      const log = pino(
        { name: 'bench-edge', level: process.env.LOG_LEVEL ?? (process.env.KDN_TEST ? 'silent' : 'warn') },
        pino.destination(2),
      );
      const edge = await startEdge({ port: 0, host: '127.0.0.1', diskBytes: 0, ...setup }, { log });
      url = edge.url;
      stop = () => edge.close();
    }
  } catch (err) {
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
  const clientOptions = { edges: [url], timeoutMs: 60_000, maxSockets: 64, secret: setup.secret };
  const client = new EdgeClient(clientOptions);
  return {
    client,
    clientOptions,
    async close(): Promise<void> {
      client.close();
      await stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
}
