import { randomBytes } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { KdnError } from '../../common/errors.ts';
import type { Logger } from '../../common/log.ts';
import type { KvFetcher } from './kv-fetcher.ts';
import type { Engine, GeneratedToken } from '../../engine-adapter/types.ts';
import type { KdnMetrics } from '../api/metrics.ts';
import type { Catalog } from '../catalog.ts';
import { cancelReason, type EngineScheduler } from '../scheduler/engine-scheduler.ts';
import { checkContextFits, planFromDocuments, planFromRetrieval, type ContextPiece } from './context-plan.ts';
import { runQuery, type QueryMode, type QueryOutcome } from './run-query.ts';

export interface KnowledgeRequest {
  namespace: string;
  /** Document ids or titles, used whole and in this order; absent means retrieval. */
  documents?: string[];
  topK: number;
}

export interface AnswerRequest {
  /** Whose request it is: tenants share the engine fairly (kdn/scheduler). */
  tenant: string;
  /** Which knowledge to put before the prompt; absent means none. */
  knowledge?: KnowledgeRequest;
  /** Text retrieval searches with (the question, or the last user message). */
  searchText: string;
  /** Text prefilled after the knowledge. */
  promptText: string;
  mode: QueryMode;
  maxTokens: number;
  temperature: number;
  seed?: number;
  stopStrings: string[];
  /** Aborts generation (a client that went away). */
  signal?: AbortSignal;
  onToken?: (token: GeneratedToken) => void;
}

/** A query in flight as GET /v1/jobs lists it. */
export interface QueryJobView {
  id: string;
  kind: 'query';
  status: 'queued' | 'running';
  createdAt: string;
}

interface InFlight {
  view: QueryJobView;
  tenant: string;
  cancel: AbortController;
}

/**
 * Assembles a query's context (named documents or retrieval), then runs it on the engine scheduler as interactive
 * work. A query ends early with TIMEOUT once its deadline passes (queueing included), and with CANCELLED when its
 * client goes away or DELETE /v1/jobs/<id> cancels it; either way it leaves the queue at once.
 */
export class QueryService {
  private readonly inFlight = new Map<string, InFlight>();

  constructor(
    private readonly deps: {
      engine: Engine; fetcher: KvFetcher; catalog: Catalog; scheduler: EngineScheduler; metrics: KdnMetrics; log: Logger;
      /** Bound on one query from arrival to its last token, queueing included. */
      queryTimeoutMs: number;
    },
  ) {}

  async answer(req: AnswerRequest): Promise<QueryOutcome> {
    const arrivedAt = performance.now();
    // The timer covers waits (queue, fetches); the per-token check covers generation, which may not yield to timers.
    const deadlineAt = arrivedAt + this.deps.queryTimeoutMs;
    const deadline = new AbortController();
    const job: InFlight = {
      view: { id: randomBytes(8).toString('hex'), kind: 'query', status: 'queued', createdAt: new Date().toISOString() },
      tenant: req.tenant,
      cancel: new AbortController(),
    };
    const timer = setTimeout(() => deadline.abort(this.timedOut(job.view.status === 'queued' ? 'waiting for the engine' : 'running')), this.deps.queryTimeoutMs).unref();
    this.inFlight.set(job.view.id, job);
    try {
      return await this.run(req, { arrivedAt, deadlineAt, deadline, job });
    } finally {
      clearTimeout(timer);
      this.inFlight.delete(job.view.id);
    }
  }

  /** The queries of `tenant` in flight, oldest first. */
  list(tenant: string): QueryJobView[] {
    return [...this.inFlight.values()].filter((q) => q.tenant === tenant).map((q) => q.view);
  }

  /** Cancels a query of `tenant` in flight: it leaves the queue, or stops generating; its client gets CANCELLED. */
  cancel(id: string, tenant: string): QueryJobView | undefined {
    const job = this.inFlight.get(id);
    if (!job || job.tenant !== tenant) return undefined;
    job.cancel.abort(new KdnError('CANCELLED', `query ${id} was cancelled`, { hint: 'it was cancelled with DELETE /v1/jobs/<id>; send it again' }));
    return job.view;
  }

  /** Stops every query in flight (shutdown past its bound). */
  cancelAll(reason: KdnError): void {
    for (const job of this.inFlight.values()) job.cancel.abort(reason);
  }

  /** Plans and runs one query; `deadline` aborts it (TIMEOUT) once `deadlineAt` (performance.now() time) passes. */
  private async run(
    req: AnswerRequest,
    { arrivedAt, deadlineAt, deadline, job }: { arrivedAt: number; deadlineAt: number; deadline: AbortController; job: InFlight },
  ): Promise<QueryOutcome> {
    const { engine, metrics } = this.deps;
    const signal = AbortSignal.any([...(req.signal ? [req.signal] : []), deadline.signal, job.cancel.signal]);
    const onToken = (token: GeneratedToken): void => {
      if (performance.now() > deadlineAt) deadline.abort(this.timedOut('generating'));
      req.onToken?.(token);
    };
    const pieces = await this.plan(req);
    const retrievalMs = performance.now() - arrivedAt;
    const promptIds = engine.tokenizer.encode(req.promptText, { addSpecialTokens: false });
    const contextTokens = pieces.reduce((n, p) => n + p.tokenIds.length, 0);
    checkContextFits(contextTokens, promptIds.length, req.maxTokens, engine.info.maxPositionEmbeddings);

    const work = { tenant: req.tenant, priority: 'interactive' as const, cost: contextTokens + promptIds.length + req.maxTokens, signal };
    const outcome = await this.deps.scheduler.run(() => {
      if (performance.now() > deadlineAt) throw this.timedOut('waiting for the engine');
      if (signal.aborted) throw cancelReason(signal);
      job.view.status = 'running';
      return runQuery(this.deps, {
        pieces,
        promptIds,
        mode: req.mode,
        maxTokens: req.maxTokens,
        temperature: req.temperature,
        ...(req.seed === undefined ? {} : { seed: req.seed }),
        stopStrings: req.stopStrings,
        onToken,
        signal,
        arrivedAt,
        retrievalMs,
      });
    }, work);
    if (signal.aborted) throw cancelReason(signal);

    metrics.queryTokens.inc({ kind: 'reused' }, outcome.tokens.reused);
    metrics.queryTokens.inc({ kind: 'computed' }, outcome.tokens.computed);
    metrics.queryTokens.inc({ kind: 'generated' }, outcome.tokens.generated);
    for (const chunk of outcome.chunks) metrics.chunkFetches.inc({ tier: chunk.tier });
    for (const [stage, ms] of Object.entries(outcome.timings)) metrics.queryStage.observe({ stage, mode: req.mode }, ms / 1000);
    return outcome;
  }

  private timedOut(stage: string): KdnError {
    return new KdnError('TIMEOUT', `the query passed its ${this.deps.queryTimeoutMs} ms deadline while ${stage}`, {
      hint: 'ask for fewer maxTokens or less knowledge, or raise KDN_QUERY_TIMEOUT_MS on the server',
    });
  }

  private async plan(req: AnswerRequest): Promise<ContextPiece[]> {
    const k = req.knowledge;
    if (!k) return [];
    if (k.documents) return planFromDocuments(this.deps.catalog, k.namespace, k.documents);
    return planFromRetrieval(this.deps.catalog, k.namespace, req.searchText, k.topK);
  }
}
