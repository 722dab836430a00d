import { randomBytes } from 'node:crypto';
import { KdnError, toKdnError } from '../../common/errors.ts';
import type { EngineQueue } from '../engine-queue.ts';
import type { IngestEstimate } from './ingest-bounds.ts';
import { emptyProgress, ingestDocument, type DocumentInput, type IngestContext, type IngestProgress } from './ingest-document.ts';

export type JobStatus = 'queued' | 'running' | 'done' | 'failed';

/** What GET /v1/jobs/<id> answers. */
export interface JobView {
  id: string;
  status: JobStatus;
  document: { id: string; namespace: string; title: string };
  progress: IngestProgress;
  /** What the upload was expected to cost when it was accepted, before any work. */
  expected?: IngestEstimate;
  error?: { code: string; message: string };
  createdAt: string;
  finishedAt?: string;
}

/** Finished jobs kept for GET /v1/jobs; older ones are forgotten (their documents stay). */
const KEEP_FINISHED = 1000;

/**
 * Ingest jobs: each upload becomes a job that waits its turn on the engine queue. Uploading a document whose job
 * is still running returns that job; one whose manifest exists is done at once.
 */
export class IngestJobs {
  private readonly jobs = new Map<string, JobView>();
  private readonly active = new Map<string, JobView>();

  constructor(
    private readonly ctx: IngestContext,
    private readonly queue: EngineQueue,
    private readonly onFinish: (job: JobView) => void = () => {},
  ) {}

  /** Jobs queued or running whose document `matches` (e.g. one tenant's), for quotas that count work in flight. */
  unfinished(matches: (job: JobView) => boolean): JobView[] {
    return [...this.active.values()].filter(matches);
  }

  async submit(doc: DocumentInput, expected?: IngestEstimate): Promise<JobView> {
    const running = this.active.get(doc.id);
    if (running) return running;
    const job: JobView = {
      id: randomBytes(8).toString('hex'),
      status: 'queued',
      document: { id: doc.id, namespace: doc.namespace, title: doc.title },
      progress: emptyProgress(),
      ...(expected ? { expected } : {}),
      createdAt: new Date().toISOString(),
    };
    this.jobs.set(job.id, job);
    // Registered before any await, so a concurrent upload of the same document joins this job.
    this.active.set(doc.id, job);
    try {
      const existing = await this.ctx.catalog.find(doc.namespace, doc.id);
      if (existing) {
        job.progress.chunks = existing.chunks.length;
        this.active.delete(doc.id);
        this.finish(job, 'done');
        return job;
      }
    } catch (err) {
      this.active.delete(doc.id);
      this.jobs.delete(job.id);
      throw err;
    }
    this.queue
      .run(async () => {
        job.status = 'running';
        await ingestDocument(this.ctx, doc, job.progress);
      })
      .then(
        () => this.finish(job, 'done'),
        (err: unknown) => {
          const e = toKdnError(err);
          this.ctx.log.error({ job: job.id, err }, 'ingest failed');
          job.error = { code: e.code, message: e.message };
          this.finish(job, 'failed');
        },
      )
      .finally(() => this.active.delete(doc.id));
    return job;
  }

  /** The job `id`; one that `visible` rejects (another tenant's) is NOT_FOUND exactly like a missing one. */
  get(id: string, visible: (job: JobView) => boolean = () => true): JobView {
    const job = this.jobs.get(id);
    if (!job || !visible(job)) throw new KdnError('NOT_FOUND', `no job ${id}`, { hint: 'jobs are kept in memory; a restarted kdn forgets them: upload again to resume' });
    return job;
  }

  private finish(job: JobView, status: 'done' | 'failed'): void {
    job.status = status;
    job.finishedAt = new Date().toISOString();
    this.onFinish(job);
    for (const [id, old] of this.jobs) {
      if (this.jobs.size <= KEEP_FINISHED) break;
      if (old.finishedAt) this.jobs.delete(id);
    }
  }
}
