import type { QueryRequest, QueryResponse, UploadResponse } from '../../../kdn/client/api-client.ts';
import type { JobView } from '../../../kdn/ingest/jobs.ts';
import type { Manifest } from '../../../kdn/manifest.ts';
import { authHeaders } from './auth.ts';

/** A kdn REST failure with the status and body the server sent. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly body: string,
    what: string,
  ) {
    super(`${what} answered ${status}: ${body.slice(0, 500)}`);
  }
}

/**
 * The few kdn REST calls the fault tests make, each with the bearer key (the shared KdnApiClient sends none yet).
 * `timeoutMs` bounds every call so a hung server fails the test instead of stalling it.
 */
export class FaultsApi {
  constructor(
    readonly url: string,
    private readonly timeoutMs = 120_000,
  ) {}

  upload(input: { title: string; text: string; namespace?: string }): Promise<UploadResponse> {
    return this.call('POST', '/v1/documents', input);
  }

  job(id: string): Promise<JobView> {
    return this.call('GET', `/v1/jobs/${encodeURIComponent(id)}`);
  }

  /** Polls until the job is done; a failed job is an error. */
  async waitForJob(id: string, intervalMs = 100): Promise<JobView> {
    for (;;) {
      const job = await this.job(id);
      if (job.status === 'done') return job;
      if (job.status === 'failed') throw new Error(`job ${id} failed: ${JSON.stringify(job.error)}`);
      await new Promise((resolve) => setTimeout(resolve, intervalMs));
    }
  }

  /** Uploads and waits for the ingest to finish. */
  async ingest(title: string, text: string): Promise<JobView> {
    const { job } = await this.upload({ title, text });
    return this.waitForJob(job.id);
  }

  query(request: QueryRequest): Promise<QueryResponse> {
    return this.call('POST', '/v1/query', request);
  }

  /** A document's manifest fields (chunk object keys included). Its detail HEADs every object at the edges. */
  document(id: string): Promise<Pick<Manifest, 'id' | 'chunks'>> {
    return this.call('GET', `/v1/documents/${encodeURIComponent(id)}`);
  }

  async metrics(): Promise<string> {
    const res = await fetch(`${this.url}/metrics`, { headers: authHeaders(), signal: AbortSignal.timeout(this.timeoutMs) });
    const text = await res.text();
    if (!res.ok) throw new ApiError(res.status, text, 'GET /metrics');
    return text;
  }

  async healthy(): Promise<boolean> {
    try {
      return (await fetch(`${this.url}/healthz`, { headers: authHeaders(), signal: AbortSignal.timeout(5_000) })).ok;
    } catch {
      return false;
    }
  }

  private async call<T>(method: string, path: string, body?: unknown): Promise<T> {
    const res = await fetch(`${this.url}${path}`, {
      method,
      signal: AbortSignal.timeout(this.timeoutMs),
      headers: { ...authHeaders(), ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
    const text = await res.text();
    if (!res.ok) throw new ApiError(res.status, text, `${method} ${path}`);
    return JSON.parse(text) as T;
  }
}

/** The value of an unlabelled Prometheus gauge or counter in a /metrics text, or undefined. */
export function metricValue(text: string, name: string): number | undefined {
  const match = new RegExp(`^${name}(?:\\{\\})? (\\S+)$`, 'm').exec(text);
  return match ? Number(match[1]) : undefined;
}
