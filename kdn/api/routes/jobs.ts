import type { Request, Response } from 'express';
import { principalOf } from '../../auth/authenticate.ts';
import type { JobService } from '../../services/job-service.ts';
import type { RouteHandlers } from '../mount-routes.ts';
import { publicJob } from '../public-views.ts';
import { JobIdSchema, JobListSchema } from '../schemas.ts';
import { validate } from '../validate.ts';

/**
 * Jobs: the caller's work on the engine, its queries in flight and its ingest jobs (kdn/services/job-service.ts),
 * listed with ?status= and ?kind= filters, shown, and cancelled (the answer comes once the job has stopped).
 */
export function jobHandlers(jobs: JobService): RouteHandlers<'jobs'> {
  return {
    list: (req: Request, res: Response) => {
      const filter = validate(JobListSchema, req.query, 'query string');
      res.json({ jobs: jobs.list(principalOf(res).tenant, filter).map((job) => (job.kind === 'ingest' ? publicJob(job) : job)) });
    },

    get: (req: Request, res: Response) => {
      const id = validate(JobIdSchema, req.params.id, 'job id');
      res.json(publicJob(jobs.get(principalOf(res).tenant, id)));
    },

    cancel: async (req: Request, res: Response) => {
      const id = validate(JobIdSchema, req.params.id, 'job id');
      const cancelled = await jobs.cancel(principalOf(res).tenant, id);
      res.json({ job: cancelled.kind === 'query' ? { ...cancelled.job, status: 'cancelled' } : publicJob(cancelled.job) });
    },
  };
}
