import { createParser } from 'eventsource-parser';
import { KdnError, ERROR_CODES, type ErrorCode } from '../../common/errors.ts';
import { codeForHttpStatus } from '../../common/http-errors.ts';
import type { JobView } from '../ingest/jobs.ts';
import type { DocumentSummary } from '../manifest.ts';
import type { QueryOutcome } from '../query/run-query.ts';

export const DEFAULT_SERVER = 'http://127.0.0.1:8080';

export interface QueryRequest {
  question: string;
  namespace?: string;
  documents?: string[];
  topK?: number;
  mode?: 'inject' | 'recompute' | 'blend';
  blendRatio?: number;
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
      throw new KdnError('INVALID_ARGUMENT', `"${server}" is not a server URL`, { hint: 'pass --server http://host:port (or set KDN_SERVER)' });
    }
  }

  upload(input: { title: string; text: string; namespace?: string }): Promise<UploadResponse> {
    return this.call('POST', '/v1/documents', input);
  }

  job(id: string): Promise<JobView> {
    return this.call('GET', `/v1/jobs/${encodeURIComponent(id)}`);
  }

  /** Polls a job until it is done (resolves) or failed (rejects with the job's error). */
  async waitForJob(id: string, onProgress?: (job: JobView) => void, intervalMs = 200): Promise<JobView> {
    for (;;) {
      const job = await this.job(id);
      onProgress?.(job);
      if (job.status === 'done') return job;
      if (job.status === 'failed') {
        const code = ERROR_CODES.includes(job.error?.code as ErrorCode) ? (job.error!.code as ErrorCode) : 'INTERNAL';
        throw new KdnError(code, `ingest of "${job.document.title}" failed: ${job.error?.message ?? 'unknown error'}`);
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

  deleteDocument(id: string, namespace?: string): Promise<Record<string, unknown>> {
    return this.call('DELETE', `/v1/documents/${encodeURIComponent(id)}${ns(namespace)}`);
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

  private async call<T>(method: string, path: string, body?: unknown): Promise<T> {
    let res: Response;
    const send = (): Promise<Response> =>
      fetch(`${this.server}${path}`, {
        method,
        signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
        headers: {
          ...(this.apiKey === undefined ? {} : { authorization: `Bearer ${this.apiKey}` }),
          ...(body === undefined ? {} : { 'content-type': 'application/json' }),
        },
        ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      });
    try {
      // A kept-alive connection the server closes as the request goes out resets it (a server whose event loop was
      // busy past its keep-alive timeout does this); a GET changes nothing, so it is sent once more.
      res = await send().catch((err: unknown) => {
        if (method === 'GET' && isConnectionReset(err)) return send();
        throw err;
      });
    } catch (err) {
      throw this.unreachable(err);
    }
    const text = await res.text();
    if (!res.ok) throw errorFromResponse(res.status, text, `${method} ${path}`);
    try {
      return (text === '' ? undefined : JSON.parse(text)) as T;
    } catch {
      return undefined as T;
    }
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
    if (!result) throw new KdnError('UNAVAILABLE', `kdn at ${this.server} closed the answer before its end`, { hint: 'the server may have restarted; ask again' });
    return result;
  }

  /** A request that got no answer: the server is down, unreachable, or stopped answering. */
  private unreachable(err: unknown): KdnError {
    const reason = (err as { cause?: { code?: string; message?: string } }).cause;
    const timedOut = err instanceof DOMException && err.name === 'TimeoutError';
    return new KdnError(timedOut ? 'TIMEOUT' : 'UNAVAILABLE', `cannot reach kdn at ${this.server}: ${reason?.code ?? reason?.message ?? (err as Error).message}`, {
      hint: 'start it with `kdn serve`, or point --server (or KDN_SERVER) at a running kdn',
    });
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

function isConnectionReset(err: unknown): boolean {
  const code = (err as { cause?: { code?: string } }).cause?.code;
  return code === 'ECONNRESET' || code === 'UND_ERR_SOCKET';
}

function ns(namespace: string | undefined): string {
  return namespace ? `?namespace=${encodeURIComponent(namespace)}` : '';
}
