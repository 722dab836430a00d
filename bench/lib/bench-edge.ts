/**
 * A warm edge started in process for the TTFT benchmark: a file origin and a memory tier in a temp directory
 * (disk tier off), so every measured GET is a memory hit served over loopback HTTP, as from an edge beside the GPU.
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { EdgeClient } from '../../edge/client.ts';
import { startEdge, type RunningEdge } from '../../edge/main.ts';

export interface BenchEdge {
  edge: RunningEdge;
  client: EdgeClient;
  close(): Promise<void>;
}

/** `memoryBytes` must hold every object the run puts, or GETs would fall through to the origin. */
export async function startBenchEdge(memoryBytes: number, maxObjectBytes: number): Promise<BenchEdge> {
  const dir = await mkdtemp(join(tmpdir(), 'kdn-bench-edge-'));
  // Signed requests, as kdn sends them: token signing and checking are part of the measured path.
  const secret = randomBytes(24).toString('hex');
  let edge: RunningEdge;
  try {
    edge = await startEdge(
      {
        port: 0,
        host: '127.0.0.1',
        memoryBytes,
        diskBytes: 0,
        diskPath: join(dir, 'disk'),
        originUrl: `file:${join(dir, 'origin')}`,
        maxBodyBytes: Math.max(maxObjectBytes, 1 << 20),
        secret,
      },
      { log: pino({ name: 'bench-edge', level: process.env.LOG_LEVEL ?? (process.env.KDN_TEST ? 'silent' : 'warn') }, pino.destination(2)) },
    );
  } catch (err) {
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
  const client = new EdgeClient({ edges: [edge.url], timeoutMs: 60_000, maxSockets: 64, secret });
  return {
    edge,
    client,
    async close(): Promise<void> {
      client.close();
      await edge.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
}
