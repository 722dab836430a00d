/**
 * Edge delivery throughput against nginx, in the same run on the same machine: 1 MiB and 16 MiB KV objects served
 * to `wrk` over loopback from the edge's memory tier, from a memory tier mirrored in shared memory (`memory-shm`:
 * its objects' bytes then lie only in their tmpfs files, each answer read from there), from its disk tier (memory
 * tier off, so every request reads the file and verifies it), and by nginx (sendfile, page cache) from a folder holding the same files. A bare express
 * app answering with the same in-memory Buffer is measured too, to show what a framework costs on the hot path.
 * GB/s is 10^9 bytes of object per second (requests/s x object size, as wrk counts them); ratio is to nginx.
 *
 * Each server is measured in several interleaved rounds (the median is the figure), so that other work on a shared
 * machine does not favour whichever server happened to run in a quiet moment. With --pin the servers share one CPU
 * and wrk runs on another (steadier on an idle machine, worse when neighbours load the pinned CPU).
 * Args: --duration S (whole seconds per measurement, default 3) --rounds N (default 5) --warmup S (default 1)
 *       --connections N (default 4) --threads N (wrk threads, default 1) --sizes MiB,MiB (default 1,16) --pin
 *       --format-versions 2,1 (the disk tier once per KV format version, whose layer checksums it verifies on every
 *       read: sha256 in version 1, BLAKE3 in 2; default the version encoders write; records' `format`)
 * Needs wrk and nginx (Debian: wrk, nginx-light); installed with apt-get when missing and running as root.
 */
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import { chmod, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer as createHttpServer, type Server } from 'node:http';
import { connect, createServer as createNetServer, type AddressInfo } from 'node:net';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import express from 'express';
import { EDGE_TOKEN_MAX_LIFETIME_S, newNonce, signEdgeToken } from '../common/edge-token.ts';
import { KdnError } from '../common/errors.ts';
import { EDGE_HEADERS, kvPath, parseCacheStatus } from '../edge/protocol.ts';
import { startEdge, type RunningEdge } from '../edge/server/main.ts';
import { encodeKVObject, KV_FORMAT_VERSION, type LayerDigestVersion } from '../storage/kv-object/index.ts';
import { openStore } from '../storage/open-store.ts';
import { formatVersions, intList, positiveInt } from './lib/args.ts';
import type { BenchRecord, BenchReport } from './report.ts';

const LAYERS = 4;
const KV_HEADS = 4;
const HEAD_DIM = 64;
/** fp16 keys and values of every layer, per token. */
const BYTES_PER_TOKEN = LAYERS * 2 * KV_HEADS * HEAD_DIM * 2;

interface WrkResult {
  requestsPerSec: number;
  errors: number;
}

interface Target {
  server: string;
  tier: string;
  /** The disk tier's objects' KV format version (the other servers serve the current format's bytes unverified). */
  format?: number;
  /** The file name of the `mib` MiB object this target serves. */
  file: (mib: number) => string;
  url: (file: string) => string;
  headers: (file: string) => Record<string, string>;
}

interface EdgeOptions {
  formats: LayerDigestVersion[];
  duration: number;
  rounds: number;
  warmup: number;
  connections: number;
  threads: number;
  sizes: number[];
  pin: boolean;
}

function parseEdgeArgs(args: string[]): EdgeOptions {
  const { values } = parseArgs({
    args,
    options: {
      duration: { type: 'string' },
      warmup: { type: 'string' },
      connections: { type: 'string' },
      threads: { type: 'string' },
      sizes: { type: 'string' },
      rounds: { type: 'string' },
      pin: { type: 'boolean' },
      'format-versions': { type: 'string' },
    },
  });
  return {
    formats: formatVersions(values['format-versions']),
    duration: positiveInt(values.duration, 3, 'duration'),
    rounds: positiveInt(values.rounds, 5, 'rounds'),
    warmup: positiveInt(values.warmup, 1, 'warmup'),
    connections: positiveInt(values.connections, 4, 'connections'),
    threads: positiveInt(values.threads, 1, 'threads'),
    sizes: intList(values.sizes, [1, 16], 'sizes'),
    pin: values.pin === true,
  };
}

export async function run(args: string[]): Promise<BenchReport> {
  const o = parseEdgeArgs(args);
  const nginx = ensureTools();
  const loadAtStart = loadavg()[0]!;
  const pin = o.pin ? pinServers() : undefined;
  const root = await mkdtemp(join(tmpdir(), 'kdn-bench-edge-'));
  // nginx workers run as an unprivileged user and must be able to reach the served files.
  await chmod(root, 0o755);
  const closers: (() => Promise<void>)[] = [];
  try {
    const { objects, targets } = await startServers(root, o, nginx, closers);
    const records: BenchRecord[] = [];
    for (const mib of o.sizes) records.push(...(await measureSize(objects.get(mib)!.length, mib, targets, o, pin?.client)));
    return {
      params: {
        duration: o.duration,
        warmup: o.warmup,
        rounds: o.rounds,
        connections: o.connections,
        threads: o.threads,
        loadAverage1mAtStart: round(loadAtStart, 2),
        pinning: pin ? `servers on cpu ${pin.server}, wrk on cpu ${pin.client}` : 'none',
        wrkCommand: `wrk -t${o.threads} -c${o.connections} -d${o.duration}s`,
      },
      records,
    };
  } finally {
    for (const close of closers.reverse()) await close().catch(() => undefined);
    await rm(root, { recursive: true, force: true });
    pin?.release();
  }
}

/**
 * The objects in an origin and in nginx's folder, the memory-tier and disk-tier edges filled with them, nginx and
 * the express reference, and how to ask each for an object; each server's close goes to `closers`.
 */
async function startServers(
  root: string,
  o: EdgeOptions,
  nginx: string,
  closers: (() => Promise<void>)[],
): Promise<{ objects: Map<number, Buffer>; targets: Target[] }> {
  const originUrl = `file:${join(root, 'origin')}`;
  const origin = openStore(originUrl);
  closers.push(() => origin.close());
  await mkdir(join(root, 'www', 'kv'), { recursive: true });
  const objects = new Map<number, Buffer>();
  for (const mib of o.sizes) {
    const object = makeObject(mib, KV_FORMAT_VERSION);
    objects.set(mib, object);
    await origin.put(`kv/${mib}mib.kv`, object);
    await writeFile(join(root, 'www', 'kv', `${mib}mib.kv`), object);
    for (const format of o.formats) await origin.put(`kv/${diskFile(mib, format)}`, makeObject(mib, format));
  }
  const biggest = Math.max(...[...objects.values()].map((object) => object.length));
  const budget = 4 * biggest * o.sizes.length * o.formats.length;
  // Edges check a signed token on every GET, as in production; wrk sends one per object.
  const secret = randomBytes(24).toString('hex');
  const token = (file: string): Record<string, string> => ({
    [EDGE_HEADERS.token]: signEdgeToken(secret, {
      method: 'GET',
      target: kvPath(`kv/${file}`),
      expiry: Math.floor(Date.now() / 1000) + EDGE_TOKEN_MAX_LIFETIME_S - 10,
      nonce: newNonce(),
    }),
  });
  const edge = async (tier: 'memory' | 'memory-shm' | 'disk'): Promise<RunningEdge> => {
    const memoryBytes = tier === 'disk' ? 0 : budget;
    const shmDir = tier === 'memory-shm' ? await mkdtemp(join(existsSync('/dev/shm') ? '/dev/shm' : root, 'kdn-bench-edge-')) : undefined;
    const running = await startEdge({
      port: 0,
      originUrl,
      memoryBytes,
      diskBytes: budget - memoryBytes,
      diskPath: join(root, `disk-${tier}`),
      secret,
      ...(shmDir ? { shmDir } : {}),
    });
    closers.push(async () => {
      await running.close();
      if (shmDir) await rm(shmDir, { recursive: true, force: true });
    });
    return running;
  };
  const memoryEdge = await edge('memory');
  const mirroredEdge = await edge('memory-shm');
  const diskEdge = await edge('disk');
  for (const mib of o.sizes) {
    await fill(memoryEdge, `kv/${mib}mib.kv`, 'memory', token(`${mib}mib.kv`));
    await fill(mirroredEdge, `kv/${mib}mib.kv`, 'memory', token(`${mib}mib.kv`));
    for (const format of o.formats) await fill(diskEdge, `kv/${diskFile(mib, format)}`, 'disk', token(diskFile(mib, format)));
  }
  await mirroredEdge.shm!.settled();
  if (mirroredEdge.stats().memory.heapBytes !== 0) throw new Error('the mirrored edge still holds object bytes in its own memory');
  const expressUrl = await startExpressReference(objects);
  closers.push(expressUrl.close);
  const nginxUrl = await startNginx(nginx, root);
  closers.push(nginxUrl.close);
  const plain = (mib: number): string => `${mib}mib.kv`;
  const targets: Target[] = [
    { server: 'nginx', tier: 'sendfile', file: plain, url: (file) => `${nginxUrl.url}/kv/${file}`, headers: () => ({}) },
    { server: 'kdn edge', tier: 'memory', file: plain, url: (file) => memoryEdge.url + kvPath(`kv/${file}`), headers: token },
    { server: 'kdn edge', tier: 'memory-shm', file: plain, url: (file) => mirroredEdge.url + kvPath(`kv/${file}`), headers: token },
    ...o.formats.map(
      (format): Target => ({
        server: 'kdn edge',
        tier: 'disk',
        format,
        file: (mib) => diskFile(mib, format),
        url: (file) => diskEdge.url + kvPath(`kv/${file}`),
        headers: token,
      }),
    ),
    { server: 'express (reference)', tier: 'memory', file: plain, url: (file) => `${expressUrl.url}/kv/${file}`, headers: () => ({}) },
  ];
  return { objects, targets };
}

/**
 * Every target's GB/s for the `mib` MiB object (`size` bytes). Rounds interleave the servers so that load from other
 * work on a shared machine hits all of them alike; the median round is the figure, the best one is kept alongside.
 */
async function measureSize(size: number, mib: number, targets: Target[], o: EdgeOptions, cpu: number | undefined): Promise<BenchRecord[]> {
  const load = (target: Target, seconds: number): Promise<WrkResult> =>
    wrk(target.url(target.file(mib)), {
      threads: o.threads,
      connections: o.connections,
      seconds,
      cpu,
      headers: target.headers(target.file(mib)),
    });
  const runs = new Map<Target, number[]>(targets.map((target) => [target, []]));
  for (const target of targets) await load(target, o.warmup);
  for (let pass = 1; pass <= o.rounds; pass += 1) {
    for (const target of targets) {
      const result = await load(target, o.duration);
      if (result.errors > 0) throw new Error(`${target.server} answered ${result.errors} requests for ${target.file(mib)} with errors`);
      const gbps = (result.requestsPerSec * size) / 1e9;
      runs.get(target)!.push(gbps);
      console.error(
        `round ${pass}: ${target.server} ${target.tier}${target.format ? ` format ${target.format}` : ''} ${mib} MiB: ${gbps.toFixed(3)} GB/s`,
      );
    }
  }
  const nginxGBps = median(runs.get(targets[0]!)!);
  return targets.map((target) => {
    const gbps = runs.get(target)!;
    return {
      server: target.server,
      tier: target.tier,
      format: target.format ?? null,
      objectMiB: mib,
      objectBytes: size,
      GBps: round(median(gbps), 3),
      bestGBps: round(Math.max(...gbps), 3),
      ratioToNginx: round(median(gbps) / nginxGBps, 2),
      rounds: gbps.map((value) => round(value, 2)).join(' '),
    };
  });
}

/**
 * With two or more CPUs, puts this process (the node servers, and nginx which inherits it) on one CPU and wrk on
 * another: each server then gets the same single core, as nginx's one worker does, and none competes with wrk.
 */
function pinServers(): { server: number; client: number; release(): void } | undefined {
  const count = cpus().length;
  if (count < 2 || spawnSync('taskset', ['-V']).error !== undefined) return undefined;
  const pinned = spawnSync('taskset', ['-a', '-p', '-c', '1', String(process.pid)]);
  if (pinned.status !== 0) return undefined;
  return {
    server: 1,
    client: 0,
    release: () => {
      spawnSync('taskset', ['-a', '-p', '-c', `0-${count - 1}`, String(process.pid)]);
    },
  };
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2;
}

/** The disk tier's file of the `mib` MiB object in KV format `format`. */
function diskFile(mib: number, format: number): string {
  return `${mib}mib-v${format}.kv`;
}

/** A valid fp16 KV object of about `mib` MiB (the header adds a few hundred bytes), in KV format `format`. */
function makeObject(mib: number, format: LayerDigestVersion): Buffer {
  const tokens = Math.round((mib * 2 ** 20) / BYTES_PER_TOKEN);
  const elements = tokens * KV_HEADS * HEAD_DIM;
  const perLayer = Array.from({ length: LAYERS }, (_, layer) => {
    const keys = new Float32Array(elements);
    const values = new Float32Array(elements);
    for (let i = 0; i < elements; i += 1) {
      keys[i] = Math.sin(i * 0.37 + layer);
      values[i] = Math.cos(i * 0.11 + layer);
    }
    return { keys, values };
  });
  return encodeKVObject(
    { layers: LAYERS, kvHeads: KV_HEADS, headDim: HEAD_DIM, tokens, positionBase: 0, ropeApplied: true, perLayer },
    {
      modelFingerprint: 'bench-edge',
      tokenIds: Array.from({ length: tokens }, (_, i) => i),
      codec: { name: 'fp16', lz4: false },
      formatVersion: format,
    },
  );
}

/** Reads a key twice through an edge and checks that the second answer came from the expected tier. */
async function fill(edge: RunningEdge, key: string, tier: 'memory' | 'disk', headers: Record<string, string>): Promise<void> {
  for (let i = 0; i < 2; i += 1) {
    const res = await fetch(`${edge.url}${kvPath(key)}`, { headers });
    await res.arrayBuffer();
    if (!res.ok) throw new Error(`filling ${key}: HTTP ${res.status}`);
    const cacheStatus = res.headers.get(EDGE_HEADERS.cacheStatus);
    if (i === 1 && parseCacheStatus(cacheStatus) !== tier) {
      throw new Error(`${key} was served by ${cacheStatus}, expected the ${tier} tier`);
    }
  }
}

/** The same Buffers behind an express route with the edge's headers: the framework's cost on the hot path. */
async function startExpressReference(objects: Map<number, Buffer>): Promise<{ url: string; close(): Promise<void> }> {
  const app = express();
  app.get('/kv/:file', (req, res) => {
    const object = objects.get(Number(/^(\d+)mib\.kv$/.exec(req.params.file)?.[1]));
    if (!object) {
      res.status(404).end();
      return;
    }
    res.writeHead(200, {
      'content-type': 'application/octet-stream',
      'content-length': object.length,
      etag: '"ref"',
      'accept-ranges': 'bytes',
    });
    res.end(object);
  });
  const server: Server = createHttpServer(app);
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

async function startNginx(binary: string, root: string): Promise<{ url: string; close(): Promise<void> }> {
  const port = await freePort();
  const prefix = join(root, 'nginx');
  await mkdir(prefix, { recursive: true });
  const conf = join(prefix, 'nginx.conf');
  const temp = (name: string): string => `${name}_temp_path ${join(prefix, name)};`;
  await writeFile(
    conf,
    `worker_processes 1;
daemon off;
pid ${join(prefix, 'nginx.pid')};
error_log ${join(prefix, 'error.log')} warn;
events { worker_connections 1024; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 1000000;
  default_type application/octet-stream;
  ${temp('client_body')} ${temp('proxy')} ${temp('fastcgi')} ${temp('uwsgi')} ${temp('scgi')}
  server {
    listen 127.0.0.1:${port};
    root ${join(root, 'www')};
  }
}
`,
  );
  const child = spawn(binary, ['-p', prefix, '-e', join(prefix, 'error.log'), '-c', conf], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const deadline = Date.now() + 10_000;
  while (!(await canConnect(port))) {
    if (child.exitCode !== null || Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`nginx did not start: ${stderr}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return {
    url: `http://127.0.0.1:${port}`,
    close: async () => {
      if (child.exitCode !== null) return;
      const exited = once(child, 'exit');
      child.kill('SIGTERM');
      await exited;
    },
  };
}

async function wrk(
  url: string,
  options: { threads: number; connections: number; seconds: number; cpu: number | undefined; headers: Record<string, string> },
): Promise<WrkResult> {
  const headerArgs = Object.entries(options.headers).flatMap(([name, value]) => ['-H', `${name}: ${value}`]);
  const command = [`wrk`, `-t${options.threads}`, `-c${options.connections}`, `-d${options.seconds}s`, ...headerArgs, url];
  if (options.cpu !== undefined) command.unshift('taskset', '-c', String(options.cpu));
  const child = spawn(command[0]!, command.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
  const [code] = (await once(child, 'exit')) as [number | null];
  const requests = /Requests\/sec:\s+([\d.]+)/.exec(output);
  if (code !== 0 || !requests) throw new Error(`wrk failed (${code}): ${output}`);
  const non2xx = Number(/Non-2xx or 3xx responses:\s+(\d+)/.exec(output)?.[1] ?? 0);
  const socket = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(output);
  const socketErrors = socket ? socket.slice(1).reduce((sum, n) => sum + Number(n), 0) : 0;
  return { requestsPerSec: Number(requests[1]), errors: non2xx + socketErrors };
}

/** Finds wrk and nginx, installing the Debian packages when missing and allowed; returns nginx's path. */
function ensureTools(): string {
  const find = (): { wrk: boolean; nginx: string | undefined } => ({
    wrk: spawnSync('wrk', ['--version']).error === undefined,
    nginx: ['nginx', '/usr/sbin/nginx'].find((candidate) => spawnSync(candidate, ['-v']).error === undefined),
  });
  let found = find();
  if ((!found.wrk || !found.nginx) && process.getuid?.() === 0) {
    spawnSync('apt-get', ['install', '-y', '-qq', '--no-install-recommends', 'wrk', 'nginx-light'], { stdio: 'inherit' });
    found = find();
  }
  if (!found.wrk || !found.nginx) {
    throw new KdnError('INVALID_ARGUMENT', 'the edge benchmark needs wrk and nginx', { hint: 'apt-get install wrk nginx-light' });
  }
  return found.nginx;
}

async function freePort(): Promise<number> {
  const server = createNetServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

function round(value: number, digits: number): number {
  const factor = 10 ** digits;
  return Math.round(value * factor) / factor;
}
