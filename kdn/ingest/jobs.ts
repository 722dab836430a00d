import { randomBytes } from 'node:crypto';
import { KdnError, toKdnError } from '../../common/errors.ts';
import { purgeObjects } from '../object-purge.ts';
import type { EngineScheduler } from '../scheduler/engine-scheduler.ts';
import type { IngestEstimate } from './ingest-bounds.ts';
import type { TokenizedDocument } from './ingest-thread.ts';
import { emptyProgress, ingestDocument, type DocumentInput, type IngestContext, type IngestProgress } from './ingest-document.ts';

export type JobStatus = 'queued' | 'running' | 'done' | 'failed' | 'cancelled';

/** What GET /v1/jobs and GET /v1/jobs/<id> answer for an ingest. */
export interface JobView {
  id: string;
  kind: 'ingest';
  status: JobStatus;
  document: { id: string; namespace: string; title: string };
  progress: IngestProgress;
  /** What the upload was estimated to cost before any work started (kdn/ingest/ingest-bounds.ts). */
  expected?: IngestEstimate;
  error?: { code: string; message: string };
  createdAt: string;
  finishedAt?: string;
}

export interface IngestLimits {
  /** Ingest jobs one tenant may have queued or running; more is refused with 429 and Retry-After. */
  maxJobsPerTenant: number;
  /** Bytes of document text one tenant may have queued or running (the text is held in memory until done). */
  maxBytesPerTenant: number;
  /** Jobs running at once; their engine work is interleaved chunk by chunk, their storage I/O overlaps. */
  running: number;
}

interface JobRecord {
  view: JobView;
  tenant: string;
  /** Dropped when the job finishes, so kept jobs do not hold documents' text. */
  doc: DocumentInput | undefined;
  bytes: number;
  abort: AbortController;
  /** Resolves when a running job has stopped. */
  settled?: Promise<void>;
}

/** Finished jobs kept for GET /v1/jobs; older ones are forgotten (their documents stay). */
const KEEP_FINISHED = 1000;

/**
 * Ingest jobs: each upload becomes a job; jobs wait in one queue per tenant and start round robin across tenants,
 * a few at a time, and each running job puts its engine work on the scheduler one chunk at a time (background
 * priority), so queries go first. Uploading a document whose job is still pending returns that job; one whose
 * manifest exists is done at once. A cancelled job stops at its next chunk: objects already stored are whole
 * (writes are atomic), and the manifest, written last, is not. A job cancelled or failed then deletes the objects
 * it wrote that nothing else uses, so they count against no quota unseen; one stopped by shutdown keeps them, so
 * its upload resumes from them after a restart.
 */
export class IngestJobs {
  private readonly jobs = new Map<string, JobRecord>();
  /** Queued or running jobs by document id. */
  private readonly pending = new Map<string, JobRecord>();
  /** Queued jobs per tenant, in arrival order; tenants take turns in `turns` order. */
  private readonly queued = new Map<string, JobRecord[]>();
  private readonly running = new Set<JobRecord>();
  private closed: KdnError | undefined;
  private readonly settled = new Set<Promise<void>>();

  constructor(
    private readonly ctx: Omit<IngestContext, 'turn'>,
    private readonly scheduler: EngineScheduler,
    private readonly limits: IngestLimits,
    private readonly onFinish: (job: JobView) => void = () => {},
  ) {}

  /** `text` tokenized and chunked as its ingest will be, off the event loop (on the ingest tokenizing thread). */
  tokenize(text: string): Promise<TokenizedDocument> {
    return this.ctx.tokenize(text, this.ctx.chunkBudget);
  }

  /** Jobs queued or running that `tenant` submitted, for quotas that count work in flight. */
  unfinished(tenant: string): JobView[] {
    return [...this.pending.values()].filter((r) => r.tenant === tenant).map((r) => r.view);
  }

  async submit(doc: DocumentInput, expected?: IngestEstimate): Promise<JobView> {
    if (this.closed) throw this.closed;
    const tenant = doc.uploadedBy;
    const existingJob = this.pending.get(doc.id);
    if (existingJob) return existingJob.view;
    const bytes = Buffer.byteLength(doc.text);
    this.admit(tenant, bytes);
    const record: JobRecord = {
      view: {
        id: randomBytes(8).toString('hex'),
        kind: 'ingest',
        status: 'queued',
        document: { id: doc.id, namespace: doc.namespace, title: doc.title },
        progress: emptyProgress(),
        ...(expected ? { expected } : {}),
        createdAt: new Date().toISOString(),
      },
      tenant,
      doc,
      bytes,
      abort: new AbortController(),
    };
    this.jobs.set(record.view.id, record);
    // Registered before any await, so a concurrent upload of the same document joins this job.
    this.pending.set(doc.id, record);
    try {
      const existing = await this.ctx.catalog.find(doc.namespace, doc.id);
      if (existing) {
        record.view.progress.chunks = existing.chunks.length;
        this.finish(record, 'done');
        return record.view;
      }
    } catch (err) {
      this.pending.delete(doc.id);
      this.jobs.delete(record.view.id);
      throw err;
    }
    if (record.abort.signal.aborted) {
      this.fail(record, record.abort.signal.reason as KdnError);
      return record.view;
    }
    const queue = this.queued.get(tenant) ?? [];
    queue.push(record);
    this.queued.set(tenant, queue);
    this.startMore();
    return record.view;
  }

  /** The job `id`; one that `visible` rejects (another tenant's) is NOT_FOUND exactly like a missing one. */
  get(id: string, visible: (job: JobView) => boolean = () => true): JobView {
    const record = this.jobs.get(id);
    if (!record || !visible(record.view)) {
      throw new KdnError('NOT_FOUND', `no job ${id}`, {
        hint: 'jobs are kept in memory; a restarted kdn forgets them: upload again to resume',
      });
    }
    return record.view;
  }

  /** The jobs `tenant` submitted, newest first. */
  list(tenant: string): JobView[] {
    return [...this.jobs.values()]
      .filter((r) => r.tenant === tenant)
      .map((r) => r.view)
      .reverse();
  }

  /**
   * Cancels a queued or running job that `tenant` submitted (a finished one is left as it is); resolves with the job
   * once it has stopped, which for a running job is after the chunk it is computing or storing.
   */
  async cancel(id: string, tenant: string): Promise<JobView> {
    const record = this.jobs.get(id);
    if (!record || record.tenant !== tenant)
      throw new KdnError('NOT_FOUND', `no job ${id} of yours`, { hint: 'list your jobs with GET /v1/jobs (kdn jobs)' });
    this.stop(
      record,
      new KdnError('CANCELLED', `ingest job ${id} was cancelled`, {
        hint: 'upload the document again to start it over; the chunk objects it wrote are deleted',
      }),
    );
    await record.settled;
    return record.view;
  }

  /**
   * Accepts no more jobs and cancels every pending one: queued jobs at once, running ones at their next chunk.
   * Resolves when the running ones have stopped.
   */
  async close(reason: KdnError): Promise<void> {
    this.closed ??= reason;
    for (const record of [...this.pending.values()]) this.stop(record, reason);
    await Promise.all([...this.settled]);
  }

  /** Refuses a job that would take its tenant past its caps. */
  private admit(tenant: string, bytes: number): void {
    let jobs = 0;
    let held = 0;
    for (const record of this.pending.values()) {
      if (record.tenant !== tenant) continue;
      jobs++;
      held += record.bytes;
    }
    const { maxJobsPerTenant, maxBytesPerTenant } = this.limits;
    if (jobs + 1 > maxJobsPerTenant || held + bytes > maxBytesPerTenant) {
      throw new KdnError(
        'RATE_LIMITED',
        `tenant has ${jobs} ingest jobs (${held} bytes) pending, the most it may have is ${maxJobsPerTenant} jobs and ${maxBytesPerTenant} bytes`,
        {
          hint: 'wait for Retry-After seconds (or for your jobs to finish: kdn jobs) and upload again',
          details: { retryAfterS: this.scheduler.retryAfterSeconds(Math.max(1, jobs)) },
        },
      );
    }
  }

  private stop(record: JobRecord, reason: KdnError): void {
    if (record.view.finishedAt) return;
    record.abort.abort(reason);
    const queue = this.queued.get(record.tenant);
    const at = queue?.indexOf(record) ?? -1;
    if (queue && at >= 0) {
      queue.splice(at, 1);
      if (queue.length === 0) this.queued.delete(record.tenant);
      this.fail(record, reason);
    }
  }

  /**
   * Starts queued jobs while there is room, tenants taking turns; a tenant already running a job goes after tenants
   * running none, so one tenant's uploads cannot hold every slot while another's wait.
   */
  private startMore(): void {
    while (this.running.size < this.limits.running && this.queued.size > 0) {
      const tenants = [...this.queued.keys()];
      const tenant = tenants.find((t) => !this.runningTenants().has(t)) ?? tenants[0]!;
      const queue = this.queued.get(tenant)!;
      const record = queue.shift()!;
      // The tenant goes to the back of the round.
      this.queued.delete(tenant);
      if (queue.length > 0) this.queued.set(tenant, queue);
      this.running.add(record);
      const done = this.execute(record).finally(() => {
        this.running.delete(record);
        this.settled.delete(done);
        this.startMore();
      });
      record.settled = done;
      this.settled.add(done);
    }
  }

  private runningTenants(): Set<string> {
    return new Set([...this.running].map((r) => r.tenant));
  }

  private async execute(record: JobRecord): Promise<void> {
    const signal = record.abort.signal;
    const turn = <T>(cost: number, fn: () => Promise<T>): Promise<T> =>
      this.scheduler.run(
        () => {
          signal.throwIfAborted();
          return fn();
        },
        { tenant: record.tenant, priority: 'background', cost, signal },
      );
    record.view.status = 'running';
    const written = new Set<string>();
    try {
      await ingestDocument({ ...this.ctx, turn }, record.doc!, record.view.progress, signal, written);
      this.finish(record, 'done');
    } catch (err) {
      const e = signal.aborted && signal.reason instanceof KdnError ? signal.reason : toKdnError(err);
      if (e.code !== 'CANCELLED') this.ctx.log.error({ job: record.view.id, err }, 'ingest failed');
      if (e !== this.closed) await this.discard(record, written);
      this.fail(record, e);
    }
  }

  /** Deletes the objects a job that will not publish wrote, except those a document or another unfinished job uses. */
  private async discard(record: JobRecord, written: Set<string>): Promise<void> {
    try {
      const { purged } = await this.ctx.catalog.collect([...written], (keys) => purgeObjects(keys, this.ctx));
      if (purged.deleted > 0)
        this.ctx.log.info({ job: record.view.id, deleted: purged.deleted }, 'deleted the objects of an unfinished ingest');
    } catch (err) {
      this.ctx.log.warn({ job: record.view.id, err }, 'could not delete the objects of an unfinished ingest; they stay at the origin');
    }
  }

  private fail(record: JobRecord, e: KdnError): void {
    record.view.error = { code: e.code, message: e.message };
    this.finish(record, e.code === 'CANCELLED' || e === this.closed ? 'cancelled' : 'failed');
  }

  private finish(record: JobRecord, status: 'done' | 'failed' | 'cancelled'): void {
    if (record.view.finishedAt) return;
    record.view.status = status;
    record.view.finishedAt = new Date().toISOString();
    if (this.pending.get(record.view.document.id) === record) this.pending.delete(record.view.document.id);
    record.doc = undefined;
    this.onFinish(record.view);
    for (const [id, old] of this.jobs) {
      if (this.jobs.size <= KEEP_FINISHED) break;
      if (old.view.finishedAt) this.jobs.delete(id);
    }
  }
}
