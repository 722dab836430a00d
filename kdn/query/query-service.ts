import { randomBytes } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { KdnError } from '../../common/errors.ts';
import type { Logger } from '../../common/log.ts';
import type { KvFetcher } from './kv-fetcher.ts';
import type { QueryMetrics } from './query-metrics.ts';
import type { Engine, GeneratedToken } from '../../engine-adapter/types.ts';
import type { Catalog } from '../catalog.ts';
import { cancelReason, type EngineScheduler } from '../scheduler/engine-scheduler.ts';
import { blendOptions } from './blend-policy.ts';
import type { DeliveryEstimate } from './delivery-estimate.ts';
import { pickLevel } from './level-policy.ts';
import {
  checkContextFits,
  planFromDocuments,
  planFromRetrieval,
  planWithinBudget,
  resolveDocuments,
  type ContextPiece,
} from './context-plan.ts';
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
  /** With mode 'blend': the share of context tokens to recompute, in [0, 1] (default: blend-policy.ts). */
  blendRatio?: number;
  /** Time to first token to pick the chunks' stored level for, over the server's default (level-policy.ts). */
  ttftTargetMs?: number;
  maxTokens: number;
  temperature: number;
  /** Nucleus sampling (1, the default, keeps every token). */
  topP?: number;
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
      engine: Engine;
      fetcher: KvFetcher;
      catalog: Catalog;
      scheduler: EngineScheduler;
      metrics: QueryMetrics;
      log: Logger;
      /** Bound on one query from arrival to its last token, queueing included. */
      queryTimeoutMs: number;
      /** Told of objects whose origin copy an edge found corrupt (see run-query.ts). */
      onCorrupt?: (key: string) => void;
      /** Delivery throughput measured over queries, for picking levels (level-policy.ts). */
      delivery: DeliveryEstimate;
      /** The edge a key's object is fetched from (the edge client's first choice), for per-edge estimates. */
      edgeOf?: (key: string) => string | undefined;
      /** Default time to first token queries pick their level for; absent uses the main codec. */
      ttftTargetMs?: number;
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
    const timer = setTimeout(
      () => deadline.abort(this.timedOut(job.view.status === 'queued' ? 'waiting for the engine' : 'running')),
      this.deps.queryTimeoutMs,
    ).unref();
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
    job.cancel.abort(
      new KdnError('CANCELLED', `query ${id} was cancelled`, { hint: 'it was cancelled with DELETE /v1/jobs/<id>; send it again' }),
    );
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
    const promptIds = engine.tokenizer.encode(req.promptText, { addSpecialTokens: false });
    const planned = await this.plan(req, promptIds.length);
    const { mode, note } = planned;
    const target = mode === 'recompute' ? undefined : (req.ttftTargetMs ?? this.deps.ttftTargetMs);
    const { pieces, choice } = pickLevel(planned.pieces, target, this.deps.delivery, this.deps.edgeOf);
    const retrievalMs = performance.now() - arrivedAt;
    const contextTokens = pieces.reduce((n, p) => n + p.tokenIds.length, 0);
    checkContextFits(contextTokens, promptIds.length, req.maxTokens, engine.info.maxPositionEmbeddings);

    const work = { tenant: req.tenant, priority: 'interactive' as const, cost: contextTokens + promptIds.length + req.maxTokens, signal };
    const outcome = await this.deps.scheduler.run(() => {
      if (performance.now() > deadlineAt) throw this.timedOut('waiting for the engine');
      if (signal.aborted) throw cancelReason(signal);
      job.view.status = 'running';
      return runQuery(this.deps, {
        tenant: req.tenant,
        pieces,
        promptIds,
        mode,
        ...(mode === 'blend' ? { blend: blendOptions(req.blendRatio) } : {}),
        maxTokens: req.maxTokens,
        temperature: req.temperature,
        ...(req.topP === undefined ? {} : { topP: req.topP }),
        ...(req.seed === undefined ? {} : { seed: req.seed }),
        stopStrings: req.stopStrings,
        onToken,
        signal,
        arrivedAt,
        retrievalMs,
      });
    }, work);
    if (signal.aborted) throw cancelReason(signal);
    const fetched = outcome.chunks.flatMap((c) =>
      c.tier === 'engine' || c.tier === 'computed' || c.edge === undefined ? [] : [{ edge: c.edge, bytes: c.bytes }],
    );
    this.deps.delivery.record(fetched, outcome.timings.fetch, choice?.probe);

    metrics.queryTokens.inc({ kind: 'reused' }, outcome.tokens.reused);
    metrics.queryTokens.inc({ kind: 'computed' }, outcome.tokens.computed);
    metrics.queryTokens.inc({ kind: 'generated' }, outcome.tokens.generated);
    for (const chunk of outcome.chunks) metrics.chunkFetches.inc({ tier: chunk.tier });
    for (const [stage, ms] of Object.entries(outcome.timings)) metrics.queryStage.observe({ stage, mode }, ms / 1000);
    return { ...outcome, level: choice, ...(note ? { note } : {}) };
  }

  private timedOut(stage: string): KdnError {
    return new KdnError('TIMEOUT', `the query passed its ${this.deps.queryTimeoutMs} ms deadline while ${stage}`, {
      hint: 'ask for fewer maxTokens or less knowledge, or raise KDN_QUERY_TIMEOUT_MS on the server',
    });
  }

  /**
   * The query's context and the mode that runs it. Named documents that do not fit the model's window next to the
   * prompt and the answer are answered from their chunks that match the question best, blended (they are no longer
   * read in their own order), and the outcome says so.
   */
  private async plan(req: AnswerRequest, promptTokens: number): Promise<{ pieces: ContextPiece[]; mode: QueryMode; note?: string }> {
    const k = req.knowledge;
    if (!k) return { pieces: [], mode: req.mode };
    if (!k.documents) return { pieces: await planFromRetrieval(this.deps.catalog, k.namespace, req.searchText, k.topK), mode: req.mode };
    const manifests = await resolveDocuments(this.deps.catalog, k.namespace, k.documents);
    const pieces = planFromDocuments(manifests);
    const window = this.deps.engine.info.maxPositionEmbeddings;
    const budget = window - 1 - promptTokens - req.maxTokens;
    const total = pieces.reduce((n, p) => n + p.tokenIds.length, 0);
    if (total <= budget) return { pieces, mode: req.mode };
    const within = planWithinBudget(this.deps.catalog, manifests, req.searchText, budget);
    if (within.length === 0) return { pieces, mode: req.mode };
    const used = within.reduce((n, p) => n + p.tokenIds.length, 0);
    const mode = req.mode === 'recompute' ? 'recompute' : 'blend';
    const note =
      `the named documents hold ${total} tokens, more than fit the model's ${window}-token window with this prompt and answer: ` +
      `answered from their ${within.length} most relevant chunks (${used} tokens)${mode === 'blend' ? ', blended' : ''}`;
    return { pieces: within, mode, note };
  }
}
