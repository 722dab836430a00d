import crypto from 'node:crypto';
import { readdirSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import type { IncomingMessage, Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import path from 'node:path';

/** The part of s3rver's API we use (the package ships no types). */
interface S3rverInstance {
  run(): Promise<AddressInfo>;
  close(): Promise<void>;
  httpServer?: Server;
}
type S3rverConstructor = new (options: {
  address: string;
  port: number;
  directory: string;
  silent: boolean;
  configureBuckets: { name: string }[];
}) => S3rverInstance;

/**
 * s3rver encrypts ListObjectsV2 continuation tokens with single DES, which OpenSSL 3 (Node >= 17) keeps in its
 * legacy provider, so every paginated listing fails with InternalError. Two-key triple DES with both keys equal is
 * the same cipher as single DES, so s3rver's 'des' calls are routed there; nothing else here asks for 'des'.
 */
function routeDesForS3rver(): void {
  try {
    crypto.createCipheriv('des', Buffer.alloc(8), Buffer.alloc(8));
    return;
  } catch {
    // DES is missing: route it below.
  }
  type CipherFactory = (algorithm: string, key: Buffer, iv: Buffer, options?: object) => unknown;
  const factories = crypto as unknown as Record<'createCipheriv' | 'createDecipheriv', CipherFactory>;
  for (const name of ['createCipheriv', 'createDecipheriv'] as const) {
    const original = factories[name];
    factories[name] = (algorithm, key, iv, options) =>
      algorithm === 'des' ? original('des-ede-cbc', Buffer.concat([key, key]), iv, options) : original(algorithm, key, iv, options);
  }
}

/**
 * s3rver lists objects in the order it walks its folders, not in key order as S3 does: "a/x" came before "a-b", and
 * since it pages with "keys after the last one", such keys could even drop out of a paginated listing. Its store
 * takes `walk` from its utils module when loaded, so replacing it first makes listings come in S3's order.
 */
function walkS3rverInKeyOrder(): void {
  const utils = require('s3rver/lib/utils.js') as { walk: (dir: string, recurse?: (dirPath: string) => boolean) => Generator<string> };
  utils.walk = function* walk(dir: string, recurse?: (dirPath: string) => boolean): Generator<string> {
    // s3rver keeps object "k" as files "k._S3rver_object" and friends, and the keys "k/..." in folder "k".
    const entries = readdirSync(dir, { withFileTypes: true })
      .map((entry) => ({ entry, order: entry.isDirectory() ? `${entry.name}/` : entry.name.replace(/\._S3rver_[^/]*$/, '') }))
      .sort((a, b) => (a.order < b.order ? -1 : a.order > b.order ? 1 : 0));
    for (const { entry } of entries) {
      const entryPath = path.posix.join(dir, entry.name);
      if (!entry.isDirectory()) yield entryPath;
      else if (!recurse || recurse(entryPath)) yield* walk(entryPath, recurse);
    }
  };
}

const require = createRequire(import.meta.url);
routeDesForS3rver();
walkS3rverInKeyOrder();
const S3rver = require('s3rver') as S3rverConstructor;

/** s3rver checks request signatures against these fixed credentials. */
export const S3RVER_ACCESS_KEY = 'S3RVER';
export const S3RVER_SECRET_KEY = 'S3RVER';

export interface RunningS3rver {
  /** Store URL for openStore(), credentials included. */
  url: string;
  endpoint: string;
  bucket: string;
  port: number;
  /** Folder holding s3rver's data. */
  dir: string;
  /** Every request served so far, oldest first (for tests that check what reached the origin). */
  requests: { method: string; url: string }[];
  stop(): Promise<void>;
}

/** The openStore() URL for a bucket on an s3rver at `endpoint`. */
export function s3rverStoreUrl(endpoint: string, bucket: string): string {
  const query = new URLSearchParams({ endpoint, accessKeyId: S3RVER_ACCESS_KEY, secretAccessKey: S3RVER_SECRET_KEY });
  return `s3://${bucket}?${query.toString()}`;
}

/**
 * Runs s3rver on 127.0.0.1:`port` (0 picks a free one) keeping data in `dir`, with `bucket` created.
 * stop() closes it, dropping keep-alive connections; it leaves `dir` in place.
 */
export async function runS3rver(options: { port: number; dir: string; bucket: string }): Promise<RunningS3rver> {
  const server = new S3rver({
    address: '127.0.0.1',
    port: options.port,
    directory: options.dir,
    silent: !process.env.S3RVER_LOG,
    configureBuckets: [{ name: options.bucket }],
  });
  const { port } = await server.run();
  const endpoint = `http://127.0.0.1:${port}`;
  const requests: RunningS3rver['requests'] = [];
  server.httpServer?.on('request', (req: IncomingMessage) => requests.push({ method: req.method ?? '', url: req.url ?? '' }));
  let stopped: Promise<void> | undefined;
  return {
    url: s3rverStoreUrl(endpoint, options.bucket),
    endpoint,
    bucket: options.bucket,
    port,
    dir: options.dir,
    requests,
    stop: () => {
      stopped ??= (async () => {
        const closing = server.close();
        server.httpServer?.closeAllConnections();
        await closing;
      })();
      return stopped;
    },
  };
}

/** Starts s3rver in this process on a free port, in a fresh temp folder that stop() removes. */
export async function startS3rver(bucket = 'kdn-test'): Promise<RunningS3rver> {
  const dir = await mkdtemp(path.join(tmpdir(), 'kdn-s3rver-'));
  let running: RunningS3rver;
  try {
    running = await runS3rver({ port: 0, dir, bucket });
  } catch (err) {
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
  return {
    ...running,
    stop: async () => {
      await running.stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
}
