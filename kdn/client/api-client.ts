import { createParser } from 'eventsource-parser';
// Node 20's built-in fetch (undici 6) now and then leaves a request pending for good when the server resets its
// connection; with nothing else keeping the event loop alive the CLI then quits mid-command (exit 13, no message).
// undici 7 rejects such a request with ECONNRESET.
import { fetch, type Response } from 'undici';
import { KdnError, ERROR_CODES, type ErrorCode } from '../../common/errors.ts';
import { backoffDelay, isTransientSocketError, sleep, type BackoffPolicy } from '../../common/backoff.ts';
import { codeForHttpStatus } from '../../common/http-errors.ts';
import type { JobView } from '../ingest/jobs.ts';
import type { DocumentSummary } from '../manifest.ts';
import type { QueryJobView } from '../query/query-service.ts';
import type { QueryOutcome } from '../query/run-query.ts';

export const DEFAULT_SERVER = 'http://127.0.0.1:8080';

export interface QueryRequest {
  question: string;
  namespace?: string;
  documents?: string[];
  topK?: number;
  mode?: 'inject' | 'recompute' | 'blend';
  blendRatio?: number;
  ttftTargetMs?: number;
  maxTokens?: number;
  temperature?: number;
  seed?: number;
}

export type QueryResponse = QueryOutcome & { question: string; namespace: string };

export interface WarmPlan {
  namespace: string;
  edges: string[];
  documents: { id: string; title: string }[];
  objects: { key: string; bytes: number }[];
  /** A token for POST /warm on the edges, when they check tokens. */
  edgeToken?: { token: string; expiresAt: number };
}

export interface UploadResponse {
  job: JobView;
  document: { id: string; namespace: string; title: string };
}

/** How long the client waits for one answer; queries queue behind ingest jobs on the engine. */
const REQUEST_TIMEOUT_MS = 10 * 60_000;
/** Retries of one call: about 8 s of backoff in all, more where the server asks for it with Retry-After. */
const RETRY: BackoffPolicy = { attempts: 6, baseMs: 250, capMs: 4_000 };
/** A Retry-After longer than this is not waited out: the error goes to the caller with its hint. */
const MAX_RETRY_AFTER_MS = 60_000;

/** The kdn REST API for the CLI and tests: every failure is a KdnError carrying the server's code and hint. */
export class KdnApiClient {
  readonly server: string;
  private readonly apiKey: string | undefined;

  /** `apiKey` is sent as "Authorization: Bearer <key>" on every call. */
  constructor(server: string = DEFAULT_SERVER, apiKey?: string) {
    this.apiKey = apiKey;
    try {
      this.server = new URL(server).origin;
    } catch {
      throw new KdnError('INVALID_ARGUMENT', `"${server}" is not a server URL`, {
        hint: 'pass --server http://host:port (or set KDN_SERVER)',
      });
    }
  }

  /** Safe to send again: a document's id is a hash of its namespace, title and text, and a repeat joins its job. */
  upload(input: { title: string; text: string; namespace?: string }): Promise<UploadResponse> {
    return this.call('POST', '/v1/documents', input);
  }

  job(id: string): Promise<JobView> {
    return this.call('GET', `/v1/jobs/${encodeURIComponent(id)}`);
  }

  /** The caller's queries in flight and ingest jobs, newest ingest first. */
  jobs(filter: { status?: string; kind?: 'ingest' | 'query' } = {}): Promise<{ jobs: (JobView | QueryJobView)[] }> {
    const query = new URLSearchParams(Object.entries(filter).filter((e): e is [string, string] => e[1] !== undefined)).toString();
    return this.call('GET', `/v1/jobs${query ? `?${query}` : ''}`);
  }

  /** Cancels a queued or running job; answers once it has stopped. */
  cancelJob(id: string): Promise<{ job: JobView | QueryJobView }> {
    return this.call('DELETE', `/v1/jobs/${encodeURIComponent(id)}`);
  }

  /** Polls a job until it is done (resolves) or failed or cancelled (rejects with the job's error). */
  async waitForJob(id: string, onProgress?: (job: JobView) => void, intervalMs = 200): Promise<JobView> {
    for (;;) {
      const job = await this.job(id);
      onProgress?.(job);
      if (job.status === 'done') return job;
      if (job.status === 'failed' || job.status === 'cancelled') {
        const code = ERROR_CODES.includes(job.error?.code as ErrorCode) ? (job.error!.code as ErrorCode) : 'INTERNAL';
        const hint = job.status === 'cancelled' ? { hint: 'upload the document again to ingest it' } : {};
        throw new KdnError(code, `ingest of "${job.document.title}" ${job.status}: ${job.error?.message ?? 'unknown error'}`, hint);
      }
      await new Promise((resolve) => setTimeout(resolve, intervalMs));
    }
  }

  listDocuments(namespace?: string): Promise<{ namespace: string; documents: DocumentSummary[] }> {
    return this.call('GET', `/v1/documents${ns(namespace)}`);
  }

  document(id: string, namespace?: string): Promise<Record<string, unknown>> {
    return this.call('GET', `/v1/documents/${encodeURIComponent(id)}${ns(namespace)}`);
  }

  /** Not re-sent after a reset connection: a delete that went through would then answer 404. */
  deleteDocument(id: string, namespace?: string): Promise<Record<string, unknown>> {
    return this.call('DELETE', `/v1/documents/${encodeURIComponent(id)}${ns(namespace)}`, undefined, false);
  }

  query(request: QueryRequest): Promise<QueryResponse> {
    return this.call('POST', '/v1/query', request);
  }

  warmPlan(request: { namespace?: string; documents?: string[] }): Promise<WarmPlan> {
    return this.call('POST', '/v1/warm/plan', request);
  }

  status(): Promise<Record<string, unknown>> {
    return this.call('GET', '/v1/status');
  }

  /**
   * One API call, sent again when that is safe: after a 429 or 503 (the server did not take it; Retry-After is
   * honoured), and for `idempotent` calls also after a connection failure or reset, e.g. a keep-alive connection
   * the server closed while the request was on its way. Waits back off exponentially with jitter.
   */
  private async call<T>(method: string, path: string, body?: unknown, idempotent = true): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      const outcome = await this.send(method, path, body);
      if (outcome.ok) return outcome.value as T;
      const { error, retryAfterMs } = outcome;
      const again =
        attempt < RETRY.attempts && (outcome.refused || (idempotent && outcome.transient)) && (retryAfterMs ?? 0) <= MAX_RETRY_AFTER_MS;
      if (!again) throw error;
      await sleep(Math.max(retryAfterMs ?? 0, backoffDelay(RETRY, attempt)));
    }
  }

  private async send(method: string, path: string, body?: unknown): Promise<Outcome> {
    let res: Response;
    try {
      res = await fetch(`${this.server}${path}`, {
        method,
        signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
        headers: {
          ...(this.apiKey === undefined ? {} : { authorization: `Bearer ${this.apiKey}` }),
          ...(body === undefined ? {} : { 'content-type': 'application/json' }),
        },
        ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      });
    } catch (err) {
      const reason = (err as { cause?: { code?: string } }).cause;
      return { ok: false, error: this.unreachable(err), transient: isTransientSocketError(err), refused: reason?.code === 'ECONNREFUSED' };
    }
    let text: string;
    try {
      text = await res.text();
    } catch (err) {
      const error = new KdnError('UNAVAILABLE', `the answer of kdn at ${this.server} was cut short: ${(err as Error).message}`, {
        hint: 'try again',
      });
      return { ok: false, error, transient: isTransientSocketError(err), refused: false };
    }
    if (res.ok) {
      try {
        return { ok: true, value: text === '' ? undefined : JSON.parse(text) };
      } catch {
        return { ok: true, value: undefined };
      }
    }
    const retryAfter = Number(res.headers.get('retry-after'));
    return {
      ok: false,
      error: errorFromResponse(res.status, text, `${method} ${path}`),
      transient: false,
      refused: res.status === 429 || res.status === 503,
      ...(Number.isFinite(retryAfter) && retryAfter > 0 ? { retryAfterMs: retryAfter * 1000 } : {}),
    };
  }

  /**
   * POST /v1/query with stream: true: calls `onText` with each piece of the answer as the engine generates it, and
   * resolves with the whole response once the server sends it.
   */
  async queryStream(request: QueryRequest, onText: (text: string) => void): Promise<QueryResponse> {
    let res: Response;
    try {
      res = await fetch(`${this.server}/v1/query`, {
        method: 'POST',
        signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
        headers: { ...(this.apiKey === undefined ? {} : { authorization: `Bearer ${this.apiKey}` }), 'content-type': 'application/json' },
        body: JSON.stringify({ ...request, stream: true }),
      });
    } catch (err) {
      throw this.unreachable(err);
    }
    if (!res.ok || !res.body) throw errorFromResponse(res.status, await res.text(), 'POST /v1/query');
    let result: QueryResponse | undefined;
    let failure: KdnError | undefined;
    const parser = createParser({
      onEvent: (event) => {
        const data = JSON.parse(event.data) as unknown;
        if (event.event === 'token') onText((data as { text: string }).text);
        else if (event.event === 'result') result = data as QueryResponse;
        else if (event.event === 'error') failure = errorFromResponse(500, event.data, 'POST /v1/query');
      },
    });
    const decoder = new TextDecoder();
    try {
      for await (const chunk of res.body) parser.feed(decoder.decode(chunk as Uint8Array, { stream: true }));
    } catch (err) {
      throw this.unreachable(err);
    }
    if (failure) throw failure;
    if (!result)
      throw new KdnError('UNAVAILABLE', `kdn at ${this.server} closed the answer before its end`, {
        hint: 'the server may have restarted; ask again',
      });
    return result;
  }

  /** A request that got no answer: the server is down, unreachable, or stopped answering. */
  private unreachable(err: unknown): KdnError {
    const reason = (err as { cause?: { code?: string; message?: string } }).cause;
    const timedOut = err instanceof DOMException && err.name === 'TimeoutError';
    return new KdnError(
      timedOut ? 'TIMEOUT' : 'UNAVAILABLE',
      `cannot reach kdn at ${this.server}: ${reason?.code ?? reason?.message ?? (err as Error).message}`,
      {
        hint: 'start it with `kdn serve`, or point --server (or KDN_SERVER) at a running kdn',
      },
    );
  }
}

/** The KdnError a failed response carries (its JSON error body, or its status alone). */
function errorFromResponse(status: number, text: string, what: string): KdnError {
  let error: { code?: string; kdn_code?: string; message?: string; hint?: string } | undefined;
  try {
    error = (JSON.parse(text) as { error?: typeof error }).error;
  } catch {
    error = undefined;
  }
  const named = error?.kdn_code ?? error?.code;
  const code = ERROR_CODES.includes(named as ErrorCode) ? (named as ErrorCode) : codeForHttpStatus(status);
  return new KdnError(code, error?.message ?? `${what} answered ${status}`, error?.hint ? { hint: error.hint } : {});
}

type Outcome =
  | { ok: true; value: unknown }
  | {
      ok: false;
      error: KdnError;
      /** The connection failed or was reset before a whole answer came. */
      transient: boolean;
      /** The server (or the host) refused the request without acting on it. */
      refused: boolean;
      retryAfterMs?: number;
    };

function ns(namespace: string | undefined): string {
  return namespace ? `?namespace=${encodeURIComponent(namespace)}` : '';
}
