import { performance } from 'node:perf_hooks';
import { KdnError } from '../../common/errors.ts';
import type { Logger } from '../../common/log.ts';
import type { KvFetcher } from './kv-fetcher.ts';
import type { Engine, GeneratedToken } from '../../engine-adapter/types.ts';
import type { KdnMetrics } from '../api/metrics.ts';
import type { Catalog } from '../catalog.ts';
import type { EngineQueue } from '../engine-queue.ts';
import { checkContextFits, planFromDocuments, planFromRetrieval, type ContextPiece } from './context-plan.ts';
import { runQuery, type QueryMode, type QueryOutcome } from './run-query.ts';

export interface KnowledgeRequest {
  namespace: string;
  /** Document ids or titles, used whole and in this order; absent means retrieval. */
  documents?: string[];
  topK: number;
}

export interface AnswerRequest {
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

/** Assembles a query's context (named documents or retrieval), then runs it on the engine queue. */
export class QueryService {
  constructor(
    private readonly deps: {
      engine: Engine; fetcher: KvFetcher; catalog: Catalog; queue: EngineQueue; metrics: KdnMetrics; log: Logger;
      /** Bound on one query from arrival to its last token, queueing included. */
      queryTimeoutMs: number;
      /** Told of objects whose origin copy an edge found corrupt (see run-query.ts). */
      onCorrupt?: (key: string) => void;
    },
  ) {}

  async answer(req: AnswerRequest): Promise<QueryOutcome> {
    const arrivedAt = performance.now();
    // The timer covers waits (queue, fetches); the per-token check covers generation, which may not yield to timers.
    const deadlineAt = arrivedAt + this.deps.queryTimeoutMs;
    const deadline = new AbortController();
    const timer = setTimeout(() => deadline.abort(), this.deps.queryTimeoutMs).unref();
    try {
      return await this.run(req, { arrivedAt, deadlineAt, deadline });
    } finally {
      clearTimeout(timer);
    }
  }

  /** Plans and runs one query; `deadline` aborts it (TIMEOUT) once `deadlineAt` (performance.now() time) passes. */
  private async run(req: AnswerRequest, { arrivedAt, deadlineAt, deadline }: { arrivedAt: number; deadlineAt: number; deadline: AbortController }): Promise<QueryOutcome> {
    const { engine, metrics } = this.deps;
    const signal = req.signal ? AbortSignal.any([req.signal, deadline.signal]) : deadline.signal;
    const onToken = (token: GeneratedToken): void => {
      if (performance.now() > deadlineAt) deadline.abort();
      req.onToken?.(token);
    };
    const pieces = await this.plan(req);
    const retrievalMs = performance.now() - arrivedAt;
    const promptIds = engine.tokenizer.encode(req.promptText, { addSpecialTokens: false });
    checkContextFits(pieces.reduce((n, p) => n + p.tokenIds.length, 0), promptIds.length, req.maxTokens, engine.info.maxPositionEmbeddings);

    const outcome = await this.deps.queue.run(() => {
      if (deadline.signal.aborted || performance.now() > deadlineAt) throw this.timedOut('waiting for the engine');
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
    });
    if (deadline.signal.aborted) throw this.timedOut('generating');

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
