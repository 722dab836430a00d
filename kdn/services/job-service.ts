import { KdnError } from '../../common/errors.ts';
import type { Tenancy } from '../auth/tenancy.ts';
import type { IngestJobs, JobStatus, JobView } from '../ingest/jobs.ts';
import type { QueryJobView, QueryService } from '../query/query-service.ts';

export interface JobFilter {
  status?: JobStatus;
  kind?: 'ingest' | 'query';
}

/**
 * A tenant's work on the engine: its queries in flight (kdn/query) and its ingest jobs (kdn/ingest), seen and
 * cancelled through one set of ids. Another tenant's jobs are NOT_FOUND.
 */
export class JobService {
  constructor(private readonly parts: { ingest: IngestJobs; queries: QueryService; tenancy: Tenancy }) {}

  /** Queries first, then ingest jobs newest first (finished ones while kdn remembers them). */
  list(tenant: string, filter: JobFilter): (JobView | QueryJobView)[] {
    const jobs: (JobView | QueryJobView)[] = [
      ...(filter.kind === 'ingest' ? [] : this.parts.queries.list(tenant)),
      ...(filter.kind === 'query' ? [] : this.parts.ingest.list(tenant)),
    ];
    return filter.status ? jobs.filter((j) => j.status === filter.status) : jobs;
  }

  /** An ingest job, also one of a shared namespace the tenant reads. */
  get(tenant: string, id: string): JobView {
    return this.parts.ingest.get(id, (job) => this.parts.tenancy.canRead(tenant, job.document.namespace));
  }

  /** Cancels a query or ingest job of the tenant's and answers once it has stopped. */
  async cancel(tenant: string, id: string): Promise<{ kind: 'query'; job: QueryJobView } | { kind: 'ingest'; job: JobView }> {
    const query = this.parts.queries.cancel(id, tenant);
    if (query) return { kind: 'query', job: query };
    const job = await this.parts.ingest.cancel(id, tenant).catch((err: unknown) => {
      throw err instanceof KdnError && err.code === 'NOT_FOUND'
        ? new KdnError('NOT_FOUND', `no job ${id} of yours is queued, running or remembered`, {
            hint: 'list your jobs with GET /v1/jobs (kdn jobs)',
          })
        : err;
    });
    return { kind: 'ingest', job };
  }
}
