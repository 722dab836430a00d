import express, { type Request, type Response, type Router } from 'express';
import { KdnError } from '../../../common/errors.ts';
import { principalOf } from '../../auth/authenticate.ts';
import { publicName } from '../../auth/tenancy.ts';
import type { JobView } from '../../ingest/jobs.ts';
import type { QueryJobView } from '../../query/query-service.ts';
import { JobIdSchema, JobListSchema } from '../schemas.ts';
import type { KdnServices } from '../services.ts';
import { validate } from '../validate.ts';

/**
 * Jobs: the caller's work on the engine. GET /v1/jobs lists its queries in flight and its ingest jobs (newest
 * first, finished ones while kdn remembers them), filtered by ?status= and ?kind=; GET /v1/jobs/:id shows an ingest
 * job (also one of a shared namespace the caller reads); DELETE /v1/jobs/:id cancels a queued or running query or
 * ingest of the caller's and answers once it has stopped. Another tenant's jobs are 404.
 */
export function jobRoutes(services: KdnServices): Router {
  const router = express.Router();
  const { tenancy } = services.access;

  router.get('/v1/jobs', (req: Request, res: Response) => {
    const filter = validate(JobListSchema, req.query, 'query string');
    const tenant = principalOf(res).tenant;
    const jobs: (JobView | QueryJobView)[] = [
      ...(filter.kind === 'ingest' ? [] : services.queries.list(tenant)),
      ...(filter.kind === 'query' ? [] : services.jobs.list(tenant).map(publicJob)),
    ];
    res.json({ jobs: filter.status ? jobs.filter((j) => j.status === filter.status) : jobs });
  });

  router.get('/v1/jobs/:id', (req: Request, res: Response) => {
    const id = validate(JobIdSchema, req.params.id, 'job id');
    const tenant = principalOf(res).tenant;
    res.json(publicJob(services.jobs.get(id, (job) => tenancy.canRead(tenant, job.document.namespace))));
  });

  router.delete('/v1/jobs/:id', async (req: Request, res: Response) => {
    const id = validate(JobIdSchema, req.params.id, 'job id');
    const tenant = principalOf(res).tenant;
    const query = services.queries.cancel(id, tenant);
    if (query) {
      res.json({ job: { ...query, status: 'cancelled' } });
      return;
    }
    const job = await services.jobs.cancel(id, tenant).catch((err: unknown) => {
      throw err instanceof KdnError && err.code === 'NOT_FOUND'
        ? new KdnError('NOT_FOUND', `no job ${id} of yours is queued, running or remembered`, { hint: 'list your jobs with GET /v1/jobs (kdn jobs)' })
        : err;
    });
    res.json({ job: publicJob(job) });
  });

  return router;
}

/** Clients see plain namespace names, never the tenant-scoped ones kdn keeps internally. */
export function publicJob(job: JobView): JobView {
  return { ...job, document: { ...job.document, namespace: publicName(job.document.namespace) } };
}
