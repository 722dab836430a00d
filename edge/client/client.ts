import { Agent, type IncomingMessage } from 'node:http';
import { backoffDelay, sleep, type BackoffPolicy } from '../../common/backoff.ts';
import { bodyDigest, secretSigner, type EdgeSigner } from '../../common/edge-token.ts';
import { KdnError } from '../../common/errors.ts';
import { validateKey } from '../../storage/keys.ts';
import {
  CONTENT_TYPES,
  DeleteResponse,
  EDGE_HEADERS,
  EDGE_PATHS,
  EdgeStats,
  ONLY_IF_CACHED,
  PutResponse,
  WarmLine,
  deletePath,
  kvPath,
  parseCacheStatus,
  ShmInfo,
  type ServedFrom,
  type WarmProgressLine,
  type WarmRequest,
  type WarmSummaryLine,
} from '../protocol.ts';
import { EdgeFailure, errorFromResponse, header, parseJson, readJson, sendRequest, type EdgeRequest } from './client-http.ts';
import { rendezvousOrder } from './rendezvous.ts';
import { ResumableBody } from './resumable-body.ts';

export interface EdgeClientOptions {
  /** Base URLs of the edges, e.g. http://10.0.0.5:8790. */
  edges: readonly string[];
  /** Per-request bound on connecting, waiting for the response head, and silence while a body arrives. */
  timeoutMs?: number;
  /** An edge that did not answer is tried last by every request for this long. */
  downCooldownMs?: number;
  /** Keep-alive sockets per edge. */
  maxSockets?: number;
  /** The secret the edges check tokens with: every request is signed with a fresh short-lived token. */
  secret?: string;
  /** Signs requests instead of `secret`, e.g. with tokens kdn issued (kdn warm). */
  signer?: EdgeSigner;
}

export interface EdgeObjectHead {
  size: number;
  etag: string;
  /** The raw Cache-Status header (values in edge/protocol.ts). */
  cacheStatus: string;
  servedFrom: ServedFrom;
  /** The edge that answered. */
  edge: string;
}

export interface EdgeGetResult extends EdgeObjectHead {
  /**
   * The object's bytes; if the serving edge dies mid-body, the rest comes from the next edge (Range + If-Range).
   * `body.received` counts the bytes delivered so far.
   */
  body: ResumableBody;
}

export interface EdgeBufferResult extends EdgeObjectHead {
  body: Buffer;
}

export interface EdgePutResult {
  edge: string;
  etag: string;
  size: number;
}

export interface EdgeDeleteResult {
  key: string;
  edges: { edge: string; ok: boolean; deleted?: DeleteResponse['deleted']; error?: string }[];
  /** With `origin: true`: whether an edge removed the object at the origin. */
  origin?: boolean;
}

export interface WarmProgress extends WarmProgressLine {
  /** The edge that reported the key; empty when no edge could warm it. */
  edge: string;
}

/** What a warm did over all edges: the edges' summary lines added up, without their `done` marker. */
export type WarmSummary = Omit<WarmSummaryLine, 'done'>;

export interface EdgeStatsResult {
  edge: string;
  stats?: EdgeStats;
  error?: string;
}

const WARM_BATCH = 1_000;
/**
 * Rounds over a key's edges for GET, HEAD and PUT (all idempotent: objects are content-addressed) when every edge
 * refused or reset the connection, as a restarting edge or a briefly overloaded host does.
 */
const RETRY: BackoffPolicy = { attempts: 3, baseMs: 100, capMs: 1_000 };

/**
 * Talks to a set of edges as one cache. Each key has an order of edges by rendezvous hashing; a request goes to the
 * key's first edge and fails over down the order when an edge is unreachable, times out or answers 5xx (the next
 * edge fills itself from the origin). NOT_FOUND, KV_CORRUPT and other 4xx answers pass through as KdnErrors; when no
 * edge answers the error is EDGE_UNAVAILABLE with every attempt in its details.
 */
export class EdgeClient {
  readonly edges: readonly string[];
  private readonly timeoutMs: number;
  private readonly downCooldownMs: number;
  private readonly agent: Agent;
  private readonly downUntil = new Map<string, number>();
  private readonly signer: EdgeSigner | undefined;

  constructor(options: EdgeClientOptions) {
    const edges = [...new Set(options.edges.map(normalizeEdgeUrl))];
    if (edges.length === 0) {
      throw new KdnError('INVALID_ARGUMENT', 'the edge client needs at least one edge URL', {
        hint: 'pass edges like http://127.0.0.1:8790',
      });
    }
    this.edges = edges;
    this.timeoutMs = options.timeoutMs ?? 10_000;
    this.downCooldownMs = options.downCooldownMs ?? 2_000;
    this.agent = new Agent({ keepAlive: true, maxSockets: options.maxSockets ?? 32 });
    this.signer = options.secret !== undefined ? secretSigner(options.secret) : options.signer;
  }

  /** The edges to try for `key`, best first; edges that recently did not answer go last. */
  order(key: string): string[] {
    const ranked = rendezvousOrder(key, this.edges);
    const now = Date.now();
    const isDown = (edge: string): boolean => (this.downUntil.get(edge) ?? 0) > now;
    return [...ranked.filter((edge) => !isDown(edge)), ...ranked.filter(isDown)];
  }

  get(key: string, options: { signal?: AbortSignal } = {}): Promise<EdgeGetResult> {
    return this.retrying(() => this.getOnce(key, options), options.signal);
  }

  private async getOnce(key: string, options: { signal?: AbortSignal }): Promise<EdgeGetResult> {
    const path = kvPath(validateKey(key));
    const order = this.order(key);
    const attempts: EdgeFailure[] = [];
    for (let i = 0; i < order.length; i += 1) {
      const edge = order[i]!;
      try {
        const res = await this.send(edge, { method: 'GET', path, signal: options.signal });
        if (res.statusCode !== 200) throw await errorFromResponse(edge, res);
        const head = headOf(edge, res);
        return { ...head, body: this.resumableBody(key, res, head, order.slice(i + 1), attempts, options.signal) };
      } catch (err) {
        this.absorb(err, attempts);
      }
    }
    throw unavailable(`GET ${key}`, attempts);
  }

  async getBuffer(key: string, options: { signal?: AbortSignal } = {}): Promise<EdgeBufferResult> {
    const { body: stream, ...head } = await this.get(key, options);
    const body = Buffer.allocUnsafe(head.size);
    let offset = 0;
    for await (const chunk of stream as AsyncIterable<Buffer>) {
      if (offset + chunk.length > body.length) {
        stream.destroy();
        throw new KdnError('KV_CORRUPT', `edge ${head.edge} sent more than the ${head.size} bytes it announced for ${key}`);
      }
      chunk.copy(body, offset);
      offset += chunk.length;
    }
    return { ...head, body };
  }

  /** The object's metadata from the key's edge, or null when it does not exist. */
  async head(key: string, options: { signal?: AbortSignal } = {}): Promise<EdgeObjectHead | null> {
    const path = kvPath(validateKey(key));
    return this.tryInOrder(`HEAD ${key}`, key, options.signal, async (edge) => {
      const res = await this.send(edge, { method: 'HEAD', path, signal: options.signal });
      res.resume();
      if (res.statusCode === 404) return null;
      if (res.statusCode !== 200) throw await errorFromResponse(edge, res);
      return headOf(edge, res);
    });
  }

  /**
   * Which tier of the key's edge holds the object, asked with Cache-Control: only-if-cached so that asking never
   * fills the edge; null when no tier holds it.
   */
  async cachedAt(key: string, options: { signal?: AbortSignal } = {}): Promise<{ edge: string; tier: 'memory' | 'disk' } | null> {
    const path = kvPath(validateKey(key));
    return this.tryInOrder(`HEAD ${key}`, key, options.signal, async (edge) => {
      const headers = { [EDGE_HEADERS.cacheControl]: ONLY_IF_CACHED };
      const res = await this.send(edge, { method: 'HEAD', path, signal: options.signal, headers });
      res.resume();
      const servedFrom = parseCacheStatus(header(res.headers, EDGE_HEADERS.cacheStatus));
      if (res.statusCode === 504 && servedFrom === 'not-cached') return null;
      if (res.statusCode !== 200 || (servedFrom !== 'memory' && servedFrom !== 'disk')) throw await errorFromResponse(edge, res);
      return { edge, tier: servedFrom };
    });
  }

  /** Stores an object through the key's edge (which verifies it and writes it through to the origin). */
  async put(key: string, body: Uint8Array, options: { signal?: AbortSignal } = {}): Promise<EdgePutResult> {
    const path = kvPath(validateKey(key));
    return this.tryInOrder(`PUT ${key}`, key, options.signal, async (edge) => {
      const res = await this.send(edge, {
        method: 'PUT',
        path,
        body,
        signal: options.signal,
        headers: { [EDGE_HEADERS.contentType]: CONTENT_TYPES.kv },
        // Uploads of large objects get time in proportion to their size on top of the base bound.
        timeoutMs: this.timeoutMs * (1 + Math.floor(body.length / (64 * 2 ** 20))),
      });
      if (res.statusCode !== 201) throw await errorFromResponse(edge, res);
      const answer = await readJson(edge, res, PutResponse, `PUT ${key}`);
      return { edge, etag: answer.etag, size: answer.size };
    });
  }

  /** Purges `key` from every edge (best effort) and, with `origin`, from the origin. Fails only if no edge answered. */
  async delete(key: string, options: { origin?: boolean } = {}): Promise<EdgeDeleteResult> {
    const path = deletePath(validateKey(key), options);
    const edges = await Promise.all(
      this.edges.map(async (edge): Promise<EdgeDeleteResult['edges'][number]> => {
        try {
          const res = await this.send(edge, { method: 'DELETE', path });
          if (res.statusCode !== 200) return { edge, ok: false, error: (await errorFromResponse(edge, res)).message };
          const answer = await readJson(edge, res, DeleteResponse, `DELETE ${key}`);
          return { edge, ok: true, deleted: answer.deleted };
        } catch (err) {
          if (err instanceof EdgeFailure) this.markDown(err);
          return { edge, ok: false, error: (err as Error).message };
        }
      }),
    );
    if (edges.every((result) => !result.ok)) {
      throw new KdnError('EDGE_UNAVAILABLE', `no edge answered DELETE ${key}`, {
        hint: 'check that the edges are running',
        details: { edges },
      });
    }
    return { key, edges, ...(options.origin ? { origin: edges.some((result) => result.deleted?.origin === true) } : {}) };
  }

  /**
   * Brings `keys` into their edges: keys are grouped by their first edge and each group is warmed there; keys of a
   * group whose edge fails move to their next edge. `onProgress` sees one line per key as edges report them.
   */
  async warm(keys: readonly string[], onProgress?: (progress: WarmProgress) => void): Promise<WarmSummary> {
    const pending = new Set(keys.map((key) => validateKey(key)));
    const summary: WarmSummary = { keys: pending.size, warmed: 0, present: 0, failed: 0, bytes: 0 };
    const tried = new Map<string, Set<string>>();
    const report = (progress: WarmProgress): void => {
      if (!pending.delete(progress.key)) return;
      summary[progress.status] += 1;
      summary.bytes += progress.status === 'warmed' ? progress.bytes : 0;
      onProgress?.(progress);
    };
    while (pending.size > 0) {
      const groups = new Map<string, string[]>();
      for (const key of pending) {
        const edge = this.order(key).find((candidate) => !tried.get(key)?.has(candidate));
        if (edge === undefined) {
          report({
            key,
            status: 'failed',
            bytes: 0,
            edge: '',
            error: { code: 'EDGE_UNAVAILABLE', message: 'no edge could warm this key' },
          });
          continue;
        }
        const group = groups.get(edge) ?? [];
        group.push(key);
        groups.set(edge, group);
      }
      const batches = [...groups].flatMap(([edge, group]) => chunk(group, WARM_BATCH).map((batch) => ({ edge, batch })));
      await Promise.all(
        batches.map(async ({ edge, batch }) => {
          try {
            await this.warmOn(edge, batch, report);
          } catch (err) {
            if (!(err instanceof EdgeFailure)) throw err;
            this.markDown(err);
          } finally {
            // Keys an edge did not report (it failed) go to their next edge in the next round.
            for (const key of batch) tried.set(key, (tried.get(key) ?? new Set()).add(edge));
          }
        }),
      );
    }
    return summary;
  }

  /** Every edge's /stats; an edge that does not answer has `error` instead. */
  async stats(): Promise<EdgeStatsResult[]> {
    return Promise.all(
      this.edges.map(async (edge): Promise<EdgeStatsResult> => {
        try {
          const res = await this.send(edge, { method: 'GET', path: EDGE_PATHS.stats });
          if (res.statusCode !== 200) return { edge, error: (await errorFromResponse(edge, res)).message };
          return { edge, stats: await readJson(edge, res, EdgeStats, 'GET /stats') };
        } catch (err) {
          return { edge, error: (err as Error).message };
        }
      }),
    );
  }

  /** Where `edge` mirrors its memory tier in shared memory; `dir: null` when it does not, or predates GET /shm. */
  async shmInfo(edge: string, options: { timeoutMs?: number } = {}): Promise<ShmInfo> {
    const res = await this.send(edge, {
      method: 'GET',
      path: EDGE_PATHS.shm,
      ...(options.timeoutMs ? { timeoutMs: options.timeoutMs } : {}),
    });
    if (res.statusCode === 404) {
      res.resume();
      return { dir: null };
    }
    if (res.statusCode !== 200) throw await errorFromResponse(edge, res);
    return readJson(edge, res, ShmInfo, 'GET /shm');
  }

  close(): void {
    this.agent.destroy();
  }

  private send(edge: string, req: Omit<EdgeRequest, 'timeoutMs'> & { timeoutMs?: number }): Promise<IncomingMessage> {
    const headers = this.signer ? { ...req.headers, ...this.sign(req) } : req.headers;
    return sendRequest(this.agent, edge, { ...req, ...(headers ? { headers } : {}), timeoutMs: req.timeoutMs ?? this.timeoutMs });
  }

  /** A fresh token per request (a PUT's also signs its body's digest, sent alongside). */
  private sign(req: Pick<EdgeRequest, 'method' | 'path' | 'body'>): Record<string, string> {
    const { token, bodyDigest: digestHeader } = EDGE_HEADERS;
    if (req.method !== 'PUT' || req.body === undefined) return { [token]: this.signer!({ method: req.method, target: req.path }) };
    const digest = bodyDigest(req.body);
    return { [token]: this.signer!({ method: req.method, target: req.path, bodyDigest: digest }), [digestHeader]: digest };
  }

  /** `call` on the key's edges in order until one answers, in up to RETRY rounds (see retrying). */
  private tryInOrder<T>(what: string, key: string, signal: AbortSignal | undefined, call: (edge: string) => Promise<T>): Promise<T> {
    return this.retrying(async () => {
      const attempts: EdgeFailure[] = [];
      for (const edge of this.order(key)) {
        try {
          return await call(edge);
        } catch (err) {
          this.absorb(err, attempts);
        }
      }
      throw unavailable(what, attempts);
    }, signal);
  }

  /** Runs `round` again, after a jittered pause, while it fails only because every edge refused or reset. */
  private async retrying<T>(round: () => Promise<T>, signal?: AbortSignal): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await round();
      } catch (err) {
        if (attempt >= RETRY.attempts || !allTransient(err)) throw err;
        await sleep(backoffDelay(RETRY, attempt), signal);
      }
    }
  }

  /** Records an edge failure so the caller moves on; anything else (a 4xx KdnError, an abort) is rethrown. */
  private absorb(err: unknown, attempts: EdgeFailure[]): void {
    if (!(err instanceof EdgeFailure)) throw err;
    this.markDown(err);
    attempts.push(err);
  }

  private markDown(failure: EdgeFailure): void {
    if (failure.unreachable) this.downUntil.set(failure.edge, Date.now() + this.downCooldownMs);
  }

  private async warmOn(edge: string, keys: string[], report: (progress: WarmProgress) => void): Promise<void> {
    const res = await this.send(edge, {
      method: 'POST',
      path: EDGE_PATHS.warm,
      body: JSON.stringify({ keys } satisfies WarmRequest),
      headers: { [EDGE_HEADERS.contentType]: CONTENT_TYPES.json },
    });
    if (res.statusCode !== 200) throw await errorFromResponse(edge, res);
    let rest = '';
    try {
      for await (const chunk of res as AsyncIterable<Buffer>) {
        rest += chunk.toString('utf8');
        let newline: number;
        while ((newline = rest.indexOf('\n')) >= 0) {
          const line = parseJson(edge, rest.slice(0, newline), WarmLine, 'POST /warm');
          rest = rest.slice(newline + 1);
          if (!('done' in line)) report({ ...line, edge });
        }
      }
    } catch (err) {
      throw err instanceof EdgeFailure
        ? err
        : new EdgeFailure(edge, 'EDGE_UNAVAILABLE', `warm progress cut short: ${(err as Error).message}`, true);
    }
  }

  /**
   * The body of a GET that survives the serving edge dying mid-transfer: the remaining bytes are asked from the key's
   * next edges with `Range: bytes=<received>-` and `If-Range: <etag>`, so only a 206 of the very same object continues it.
   */
  private resumableBody(
    key: string,
    first: IncomingMessage,
    head: EdgeObjectHead,
    rest: string[],
    attempts: EdgeFailure[],
    signal?: AbortSignal,
  ): ResumableBody {
    const path = kvPath(key);
    const remaining = [...rest];
    const resume = async (failure: EdgeFailure, received: number): Promise<{ res: IncomingMessage; edge: string }> => {
      this.absorb(failure, attempts);
      for (;;) {
        const next = remaining.shift();
        if (next === undefined) throw unavailable(`GET ${key} (resuming at byte ${received})`, attempts);
        try {
          const candidate = await this.send(next, {
            method: 'GET',
            path,
            signal,
            headers: { [EDGE_HEADERS.range]: `bytes=${received}-`, [EDGE_HEADERS.ifRange]: head.etag },
          });
          if (candidate.statusCode !== 206) {
            const err = candidate.statusCode === 200 ? changed(key, next) : await errorFromResponse(next, candidate);
            candidate.resume();
            throw err;
          }
          const { etag, contentRange } = EDGE_HEADERS;
          if (header(candidate.headers, etag) !== head.etag || !header(candidate.headers, contentRange).startsWith(`bytes ${received}-`)) {
            candidate.resume();
            throw changed(key, next);
          }
          return { res: candidate, edge: next };
        } catch (err) {
          this.absorb(err, attempts);
        }
      }
    };
    return new ResumableBody(first, { edge: head.edge, size: head.size, resume, ...(signal ? { signal } : {}) });
  }
}

function headOf(edge: string, res: IncomingMessage): EdgeObjectHead {
  const cacheStatus = header(res.headers, EDGE_HEADERS.cacheStatus);
  return {
    size: Number(header(res.headers, EDGE_HEADERS.contentLength)),
    etag: header(res.headers, EDGE_HEADERS.etag),
    cacheStatus,
    servedFrom: parseCacheStatus(cacheStatus),
    edge,
  };
}

function changed(key: string, edge: string): KdnError {
  return new KdnError('CONFLICT', `${key} changed while it was being read (edge ${edge} has another version)`, {
    hint: 'read the object again',
  });
}

function unavailable(what: string, attempts: EdgeFailure[]): KdnError {
  return new KdnError('EDGE_UNAVAILABLE', `no edge could answer ${what}`, {
    hint: 'check that the edges are running and can reach the origin',
    details: {
      attempts: attempts.map((failure) => ({
        edge: failure.edge,
        code: failure.code,
        message: failure.message,
        transient: failure.transient,
      })),
    },
  });
}

/** An EDGE_UNAVAILABLE whose every attempt was refused or reset (not a timeout, not a 5xx answer). */
function allTransient(err: unknown): boolean {
  if (!(err instanceof KdnError) || err.code !== 'EDGE_UNAVAILABLE') return false;
  const attempts = err.details?.attempts as { transient?: boolean }[] | undefined;
  return attempts !== undefined && attempts.length > 0 && attempts.every((a) => a.transient === true);
}

function normalizeEdgeUrl(url: string): string {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new KdnError('INVALID_ARGUMENT', `"${url}" is not an edge URL`, { hint: 'write edges as http://host:port' });
  }
  if (parsed.protocol !== 'http:') {
    throw new KdnError('INVALID_ARGUMENT', `edge URL "${url}" is not http:`, {
      hint: 'edges speak plain HTTP on a private network: http://host:port',
    });
  }
  return parsed.origin;
}

function chunk<T>(items: T[], size: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size));
  return out;
}
