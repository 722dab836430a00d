import { createHash } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { once } from 'node:events';
import { closeSync, fstatSync, openSync } from 'node:fs';
import type { Registry } from 'prom-client';
import { KdnError, toKdnError } from '../../common/errors.ts';
import { readFully } from '../../common/read-fully.ts';
import { ReusedBuffers } from '../../common/reused-buffers.ts';
import { sendError } from '../../common/http-errors.ts';
import type { Logger } from '../../common/log.ts';
import { retryAfterOf } from '../../common/failed-auth-throttle.ts';
import { capConnectionsPerAddress } from '../../common/slow-clients.ts';
import { isChunkKey, validateKey } from '../../storage/keys.ts';
import { fileIdentity } from '../../storage/kv-object/index.ts';
import {
  CACHE_STATUS,
  CONTENT_TYPES,
  DeleteQuery,
  EDGE_HEADERS,
  EDGE_QUERY,
  MAX_WARM_KEYS,
  ONLY_IF_CACHED,
  ROUTE_METHODS,
  WARM_BODY_LIMIT,
  WarmRequest,
  describeRoutes,
  edgeRouteOf,
  encodedKeyOf,
  type DeleteResponse,
  type EdgeMethod,
  type EdgeRoute,
  type Health,
  type PutResponse,
  type ShmInfo,
  type WarmProgressLine,
  type WarmSummaryLine,
} from '../protocol.ts';
import { EdgeAuth, grantCovers, type EdgeGrant } from './auth.ts';
import type { CachedObject } from './cached-object.ts';
import { cacheStatusFor, cacheStatusForError } from './cache-status.ts';
import type { EdgeConfig } from './config.ts';
import { ifRangeHolds, noneMatch, parseRange } from './http-range.ts';
import { readBody } from './request-body.ts';
import { edgeRequestTimer } from './metrics.ts';
import type { MemoryObject } from './memory-tier.ts';
import type { MirroredFile } from './shm-mirror.ts';
import type { ServeCounters } from './stats.ts';
import type { TieredCache } from './tiered-cache.ts';

export interface EdgeServerDeps {
  cache: TieredCache;
  config: EdgeConfig;
  served: ServeCounters;
  stats: () => unknown;
  metrics: Registry;
  /** What GET /shm answers. */
  shm: ShmInfo;
  log: Logger;
}

/** The server's own state besides its dependencies. */
interface EdgeContext extends EdgeServerDeps {
  auth: EdgeAuth;
  /** What memory hits held only in their shared-memory files are read into (serveMirrored). */
  readBuffers: ReusedBuffers;
}

/** Bytes of read buffers an edge keeps for memory hits held in shared memory: a few objects in flight at once. */
const READ_BUFFER_BYTES = 256 * 1024 * 1024;

/**
 * The edge's HTTP API on bare node:http: the GET/HEAD hot path answers a memory hit synchronously with one
 * writeHead and one res.end of the cached Buffer (no copy, no middleware), which is where express would cost
 * throughput; a memory hit held only in its shared-memory file (memory-tier.ts) is read from that file first. The
 * other routes are few enough not to need a framework either. Paths, methods, headers and bodies are those of
 * edge/protocol.ts:
 *
 *   GET|HEAD /kv/<key>   object (Range, ETag/If-None-Match, Cache-Status)
 *   PUT /kv/<key>        verified, written through to the origin, kept in both tiers (201)
 *   DELETE /kv/<key>     purge this edge's tiers; ?origin=true also deletes at the origin
 *   POST /warm           {"keys": [...]} -> NDJSON progress, one line per key, then a summary line
 *   GET /stats, /metrics (Prometheus), /healthz
 *   GET /shm             where the memory tier is mirrored in shared memory, for kdn on the same host
 *
 * A known path asked with a method it does not answer is 405 with an Allow header, before any token check.
 * Every route but /healthz needs an X-KDN-Token signed by kdn (auth.ts, common/edge-token.ts) when the edge has a
 * secret; a request without one is refused before its body is read. Only chunk KV objects (storage/keys.ts
 * isChunkKey) go through an edge: manifests, secrets and anything else at the origin are never served, stored,
 * purged or warmed here.
 */
export function createEdgeServer(edgeDeps: EdgeServerDeps): Server {
  const deps: EdgeContext = { ...edgeDeps, auth: new EdgeAuth(edgeDeps.config), readBuffers: new ReusedBuffers(READ_BUFFER_BYTES) };
  const { config } = deps;
  const timeRequest = edgeRequestTimer(deps.metrics);
  const headersTimeout = Math.min(config.headersTimeoutMs, config.requestTimeoutMs);
  const server = createServer(
    {
      requestTimeout: config.requestTimeoutMs,
      headersTimeout,
      // Node checks the two timeouts above only this often (30 s by default).
      connectionsCheckingInterval: Math.max(50, Math.min(1_000, Math.floor(headersTimeout / 4))),
      keepAliveTimeout: 5_000,
    },
    (req, res) => {
      timeRequest(req, res);
      route(deps, req, res);
    },
  );
  server.timeout = config.idleTimeoutMs;
  capConnectionsPerAddress(server, config.maxConnectionsPerAddress);
  return server;
}

function route(deps: EdgeContext, req: IncomingMessage, res: ServerResponse): void {
  deps.served.requests += 1;
  const url = req.url ?? '/';
  const queryAt = url.indexOf('?');
  const path = queryAt < 0 ? url : url.slice(0, queryAt);
  const query = queryAt < 0 ? '' : url.slice(queryAt + 1);
  const method = req.method ?? 'GET';
  const name = edgeRouteOf(path);
  if (name === undefined) {
    fail(
      deps,
      res,
      new KdnError('NOT_FOUND', `no route ${method} ${path}`, {
        hint: `edge routes: ${describeRoutes()}`,
      }),
    );
    return;
  }
  if (!allows(name, method)) {
    methodNotAllowed(deps, res, method, path, ROUTE_METHODS[name]);
    return;
  }
  if (name === 'kv') {
    routeObject(deps, req, res, method, path, query);
    return;
  }
  if (name === 'healthz') {
    sendJson(res, 200, { status: 'ok' } satisfies Health);
    return;
  }
  const grant = authorized(deps, req, res, method, name);
  if (!grant) return;
  if (name === 'warm') void warm(deps, req, res, grant);
  else if (name === 'stats') sendJson(res, 200, deps.stats());
  else if (name === 'shm') sendJson(res, 200, deps.shm);
  else void sendMetrics(deps, res);
}

function allows(name: EdgeRoute, method: string): method is EdgeMethod {
  return (ROUTE_METHODS[name] as readonly string[]).includes(method);
}

function routeObject(deps: EdgeContext, req: IncomingMessage, res: ServerResponse, method: EdgeMethod, path: string, query: string): void {
  let key: string;
  try {
    key = validateKey(decodePath(encodedKeyOf(path)));
  } catch (err) {
    fail(deps, res, err);
    return;
  }
  const grant = authorized(deps, req, res, method, 'kv');
  if (!grant) return;
  if (!isChunkKey(key) || !grantCovers(grant, key)) {
    fail(
      deps,
      res,
      new KdnError('FORBIDDEN', `${key} is not a chunk object this request may touch`, {
        hint: 'edges handle only chunk KV objects (kv/...*.kv), and a scoped token only the keys under its scope',
      }),
    );
    return;
  }
  switch (method) {
    case 'GET':
      serveObject(deps, req, res, key, false);
      return;
    case 'HEAD':
      serveObject(deps, req, res, key, true);
      return;
    case 'PUT':
      void putObject(deps, req, res, key, grant);
      return;
    default:
      void deleteObject(deps, res, key, query);
      return;
  }
}

/** Answers 401/403/429 and returns undefined unless the request carries a token for itself (see auth.ts). */
function authorized(deps: EdgeContext, req: IncomingMessage, res: ServerResponse, method: string, name: EdgeRoute): EdgeGrant | undefined {
  try {
    return deps.auth.authorize(req, method, name);
  } catch (err) {
    deps.served.unauthorized += 1;
    fail(deps, res, err);
    return undefined;
  }
}

function serveObject(deps: EdgeContext, req: IncomingMessage, res: ServerResponse, key: string, head: boolean): void {
  const inMemory = deps.cache.fromMemory(key);
  if (inMemory?.body) {
    answerBuffer(deps, req, res, { etag: inMemory.etag, body: inMemory.body }, CACHE_STATUS.memory, head);
    return;
  }
  if (inMemory?.file) {
    if (head) answerObject(deps, req, res, inMemory, CACHE_STATUS.memory, true, () => undefined);
    else
      serveMirrored(deps, req, res, key, inMemory, inMemory.file).catch((err: unknown) => {
        deps.log.error({ err }, 'edge could not answer a GET from shared memory');
        res.destroy();
      });
    return;
  }
  if (onlyIfCached(req) && deps.cache.holder(key) === null) {
    res.setHeader(EDGE_HEADERS.cacheStatus, CACHE_STATUS.notCached);
    fail(
      deps,
      res,
      new KdnError('TIMEOUT', `${key} is not cached at this edge`, {
        hint: 'the request said Cache-Control: only-if-cached; ask without it to fetch the object from the origin',
      }),
    );
    return;
  }
  serveBelowMemory(deps, req, res, key, head);
}

function serveBelowMemory(deps: EdgeContext, req: IncomingMessage, res: ServerResponse, key: string, head: boolean): void {
  deps.cache
    .belowMemory(key)
    .then(
      (found) => answerBuffer(deps, req, res, found.object, cacheStatusFor(found), head),
      (err: unknown) => {
        res.setHeader(EDGE_HEADERS.cacheStatus, cacheStatusForError(err));
        fail(deps, res, err);
      },
    )
    .catch((err: unknown) => {
      deps.log.error({ err }, 'edge could not answer a GET');
      res.destroy();
    });
}

/**
 * A memory hit whose bytes lie only in its shared-memory file, read from there into a reused buffer before anything
 * is answered: when the file is gone or is not the one the tier wrote (its identity differs), the tier forgets the
 * object and the request is answered from below memory, which fills the tier and the mirror again.
 */
async function serveMirrored(
  deps: EdgeContext,
  req: IncomingMessage,
  res: ServerResponse,
  key: string,
  object: MemoryObject,
  file: MirroredFile,
): Promise<void> {
  const bytes = await readMirrored(file, object.size, deps.readBuffers);
  if (bytes === null) {
    deps.cache.memory.forget(key, object);
    serveBelowMemory(deps, req, res, key, false);
    return;
  }
  const giveBack = (): void => deps.readBuffers.give(bytes.buffer as ArrayBuffer);
  const sent = answerObject(deps, req, res, object, CACHE_STATUS.memory, false, (start, end) => {
    // Once the response closes its bytes were handed to the socket, or never will be.
    res.once('close', giveBack);
    res.end(bytes.subarray(start, end + 1));
  });
  if (!sent) giveBack();
}

/**
 * `file`'s `size` bytes in a view of a buffer from `buffers`, or null when it is gone, replaced or unreadable. Opening
 * and checking a tmpfs file costs microseconds, so that runs on this thread; the copy runs on libuv's pool.
 */
async function readMirrored(file: MirroredFile, size: number, buffers: ReusedBuffers): Promise<Uint8Array | null> {
  let fd: number;
  try {
    fd = openSync(file.path, 'r');
  } catch {
    return null;
  }
  try {
    // The identity covers the size too: a file of another length is not the one the tier wrote.
    if (fileIdentity(fstatSync(fd)) !== file.identity) return null;
    const bytes = buffers.take(size);
    if (await new Promise<boolean>((done) => readFully(fd, bytes, 0, done))) return bytes;
    buffers.give(bytes.buffer as ArrayBuffer);
    return null;
  } catch {
    return null;
  } finally {
    closeSync(fd);
  }
}

/** RFC 9111: answer from the cache or not at all. */
function onlyIfCached(req: IncomingMessage): boolean {
  const value = req.headers[EDGE_HEADERS.cacheControl];
  return value?.split(',').some((directive) => directive.trim().toLowerCase() === ONLY_IF_CACHED) ?? false;
}

/** answerObject for an object whose bytes are in `object.body`. */
function answerBuffer(
  deps: EdgeContext,
  req: IncomingMessage,
  res: ServerResponse,
  object: CachedObject,
  cacheStatus: string,
  head: boolean,
): void {
  const { etag, body } = object;
  answerObject(deps, req, res, { etag, size: body.length }, cacheStatus, head, (start, end) => res.end(body.subarray(start, end + 1)));
}

/**
 * Answers a GET or HEAD of an object: 304, 416, 206 or 200 by its ETag and size, calling `send` with the inclusive
 * byte range to send when there is a body to send. Returns whether it did.
 */
function answerObject(
  deps: EdgeContext,
  req: IncomingMessage,
  res: ServerResponse,
  object: { etag: string; size: number },
  cacheStatus: string,
  head: boolean,
  send: (start: number, end: number) => void,
): boolean {
  const { size, etag } = object;
  const ifNoneMatch = req.headers[EDGE_HEADERS.ifNoneMatch];
  if (ifNoneMatch !== undefined && noneMatch(ifNoneMatch, etag)) {
    deps.served.notModified += 1;
    res.writeHead(304, [EDGE_HEADERS.etag, etag, EDGE_HEADERS.cacheStatus, cacheStatus]);
    res.end();
    return false;
  }
  const rangeHeader = req.headers[EDGE_HEADERS.range];
  if (rangeHeader !== undefined && ifRangeHolds(single(req.headers[EDGE_HEADERS.ifRange]), etag)) {
    const range = parseRange(rangeHeader, size);
    if (range === 'unsatisfiable') {
      res.setHeader(EDGE_HEADERS.contentRange, `bytes */${size}`);
      res.setHeader(EDGE_HEADERS.cacheStatus, cacheStatus);
      fail(
        deps,
        res,
        new KdnError('RANGE_NOT_SATISFIABLE', `range "${rangeHeader}" is outside the object's ${size} bytes`, {
          hint: 'ask for bytes between 0 and the object size minus one',
        }),
      );
      return false;
    }
    if (range) {
      const length = range.end - range.start + 1;
      deps.served.partial += 1;
      res.writeHead(206, [
        ...objectHeaders(length, etag, cacheStatus),
        EDGE_HEADERS.contentRange,
        `bytes ${range.start}-${range.end}/${size}`,
      ]);
      if (head) {
        res.end();
        return false;
      }
      deps.served.bytesServed += length;
      send(range.start, range.end);
      return true;
    }
  }
  res.writeHead(200, objectHeaders(size, etag, cacheStatus));
  if (head) {
    res.end();
    return false;
  }
  deps.served.bytesServed += size;
  send(0, size - 1);
  return true;
}

/** Headers of a 200 or 206 object answer, as a flat list (the cheapest form for writeHead). */
function objectHeaders(length: number, etag: string, cacheStatus: string): string[] {
  return [
    EDGE_HEADERS.contentType,
    CONTENT_TYPES.kv,
    EDGE_HEADERS.contentLength,
    String(length),
    EDGE_HEADERS.etag,
    etag,
    EDGE_HEADERS.acceptRanges,
    'bytes',
    EDGE_HEADERS.cacheStatus,
    cacheStatus,
  ];
}

async function putObject(deps: EdgeContext, req: IncomingMessage, res: ServerResponse, key: string, grant: EdgeGrant): Promise<void> {
  try {
    const hash = grant.bodyDigest === undefined ? undefined : createHash('sha256');
    const body = await readBody(req, deps.config.maxBodyBytes, hash);
    if (hash && hash.digest('hex') !== grant.bodyDigest) {
      throw new KdnError('FORBIDDEN', `the body of this PUT is not the one its token signs`, {
        hint: 'a PUT token signs the SHA-256 of its body (X-KDN-Content-SHA256): sign the body you send',
      });
    }
    const object = await deps.cache.put(key, body);
    deps.served.puts += 1;
    res.setHeader(EDGE_HEADERS.etag, object.etag);
    sendJson(res, 201, { key, size: body.length, etag: object.etag } satisfies PutResponse);
  } catch (err) {
    fail(deps, res, err);
  }
}

async function deleteObject(deps: EdgeContext, res: ServerResponse, key: string, query: string): Promise<void> {
  try {
    const parsed = DeleteQuery.safeParse(Object.fromEntries(new URLSearchParams(query)));
    if (!parsed.success) {
      throw new KdnError('INVALID_ARGUMENT', `bad query "${query}"`, { hint: `the only parameter is ${EDGE_QUERY.origin}=true|false` });
    }
    const origin = parsed.data[EDGE_QUERY.origin];
    const deleted = await deps.cache.delete(key, { origin: origin === 'true' || origin === '1' });
    deps.served.deletes += 1;
    sendJson(res, 200, { key, deleted } satisfies DeleteResponse);
  } catch (err) {
    fail(deps, res, err);
  }
}

async function warm(deps: EdgeContext, req: IncomingMessage, res: ServerResponse, grant: EdgeGrant): Promise<void> {
  let keys: string[];
  let concurrency: number;
  try {
    const text = (await readBody(req, WARM_BODY_LIMIT)).toString('utf8');
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch {
      throw new KdnError('INVALID_ARGUMENT', 'POST /warm body is not JSON', { hint: 'send {"keys": ["ns/doc/chunk-0001.kv", ...]}' });
    }
    const parsed = WarmRequest.safeParse(json);
    if (!parsed.success) {
      throw new KdnError(
        'INVALID_ARGUMENT',
        `POST /warm body is invalid: ${parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`,
        {
          hint: `send {"keys": [...]} with 1 to ${MAX_WARM_KEYS} keys`,
        },
      );
    }
    keys = [...new Set(parsed.data.keys.map((key) => validateKey(key)))];
    concurrency = parsed.data.concurrency;
  } catch (err) {
    fail(deps, res, err);
    return;
  }

  res.writeHead(200, { [EDGE_HEADERS.contentType]: CONTENT_TYPES.ndjson, [EDGE_HEADERS.cacheControl]: 'no-store' });
  const summary: WarmSummaryLine = { done: true, keys: keys.length, warmed: 0, present: 0, failed: 0, bytes: 0 };
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < keys.length && !res.destroyed) {
      const key = keys[next++]!;
      let line: WarmProgressLine;
      if (!isChunkKey(key) || !grantCovers(grant, key)) {
        // Answered exactly like a key the origin lacks, without asking it: a warm token never tells whether
        // something outside its scope exists.
        summary.failed += 1;
        await writeLine(res, absentLine(key));
        continue;
      }
      try {
        const outcome = await deps.cache.warm(key);
        summary[outcome.status] += 1;
        summary.bytes += outcome.status === 'warmed' ? outcome.bytes : 0;
        line = { key, status: outcome.status, bytes: outcome.bytes };
      } catch (err) {
        const e = toKdnError(err);
        summary.failed += 1;
        line = e.code === 'NOT_FOUND' ? absentLine(key) : { key, status: 'failed', bytes: 0, error: { code: e.code, message: e.message } };
      }
      await writeLine(res, line);
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, keys.length) }, worker));
  if (!res.destroyed) res.end(`${JSON.stringify(summary)}\n`);
}

/** The progress line of a key that is not there (or not the caller's to know about). */
function absentLine(key: string): WarmProgressLine {
  return { key, status: 'failed', bytes: 0, error: { code: 'NOT_FOUND', message: `no object ${key} at the origin` } };
}

/** Writes one NDJSON line, waiting for the socket when the client reads slower than keys are warmed. */
async function writeLine(res: ServerResponse, line: WarmProgressLine): Promise<void> {
  if (res.destroyed) return;
  if (!res.write(`${JSON.stringify(line)}\n`)) await Promise.race([once(res, 'drain'), once(res, 'close')]);
}

async function sendMetrics(deps: EdgeContext, res: ServerResponse): Promise<void> {
  try {
    const text = await deps.metrics.metrics();
    res.writeHead(200, { [EDGE_HEADERS.contentType]: deps.metrics.contentType, [EDGE_HEADERS.contentLength]: Buffer.byteLength(text) });
    res.end(text);
  } catch (err) {
    fail(deps, res, err);
  }
}

function sendJson(res: ServerResponse, status: number, value: unknown): void {
  const text = JSON.stringify(value);
  res.writeHead(status, {
    [EDGE_HEADERS.contentType]: CONTENT_TYPES.json,
    [EDGE_HEADERS.contentLength]: Buffer.byteLength(text),
    [EDGE_HEADERS.cacheControl]: 'no-store',
  });
  res.end(text);
}

/** RFC 9110 section 15.5.6: 405 names the methods the path does answer. */
function methodNotAllowed(deps: EdgeContext, res: ServerResponse, method: string, path: string, allowed: readonly EdgeMethod[]): void {
  res.setHeader(EDGE_HEADERS.allow, allowed.join(', '));
  fail(deps, res, new KdnError('METHOD_NOT_ALLOWED', `${method} is not allowed on ${path}`, { hint: `use ${allowed.join(', ')}` }));
}

function fail(deps: EdgeContext, res: ServerResponse, err: unknown): void {
  deps.served.errors += 1;
  const e = toKdnError(err);
  if (e.details?.['aborted'] === true) deps.log.debug({ err: e.message }, 'client went away before sending its whole body');
  else if (e.code === 'INTERNAL' || e.code === 'STORAGE_ERROR') deps.log.error({ err: e, cause: e.cause }, 'edge request failed');
  const retryAfter = retryAfterOf(e);
  if (retryAfter !== undefined && !res.headersSent) res.setHeader(EDGE_HEADERS.retryAfter, retryAfter);
  sendError(res, e);
}

function single(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[0] : value;
}

function decodePath(encoded: string): string {
  if (!encoded.includes('%')) return encoded;
  try {
    return decodeURIComponent(encoded);
  } catch {
    throw new KdnError('INVALID_KEY', 'object key in the URL is not valid percent-encoding', {
      hint: 'keys need no escaping: use [A-Za-z0-9._=-/]',
    });
  }
}
