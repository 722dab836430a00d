import { performance } from 'node:perf_hooks';
import type { Logger } from '../../common/log.ts';
import type { EdgeClient } from '../../edge/client.ts';
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
    private readonly deps: { engine: Engine; edges: EdgeClient; catalog: Catalog; queue: EngineQueue; metrics: KdnMetrics; log: Logger },
  ) {}

  async answer(req: AnswerRequest): Promise<QueryOutcome> {
    const { engine, metrics } = this.deps;
    const arrivedAt = performance.now();
    const pieces = await this.plan(req);
    const retrievalMs = performance.now() - arrivedAt;
    const promptIds = engine.tokenizer.encode(req.promptText, { addSpecialTokens: false });
    checkContextFits(pieces.reduce((n, p) => n + p.tokenIds.length, 0), promptIds.length, req.maxTokens, engine.info.maxPositionEmbeddings);

    const outcome = await this.deps.queue.run(() =>
      runQuery(this.deps, {
        pieces,
        promptIds,
        mode: req.mode,
        maxTokens: req.maxTokens,
        temperature: req.temperature,
        ...(req.seed === undefined ? {} : { seed: req.seed }),
        stopStrings: req.stopStrings,
        ...(req.onToken ? { onToken: req.onToken } : {}),
        ...(req.signal ? { signal: req.signal } : {}),
        arrivedAt,
        retrievalMs,
      }),
    );

    metrics.queryTokens.inc({ kind: 'reused' }, outcome.tokens.reused);
    metrics.queryTokens.inc({ kind: 'computed' }, outcome.tokens.computed);
    metrics.queryTokens.inc({ kind: 'generated' }, outcome.tokens.generated);
    for (const chunk of outcome.chunks) metrics.chunkFetches.inc({ tier: chunk.tier });
    for (const [stage, ms] of Object.entries(outcome.timings)) metrics.queryStage.observe({ stage, mode: req.mode }, ms / 1000);
    return outcome;
  }

  private async plan(req: AnswerRequest): Promise<ContextPiece[]> {
    const k = req.knowledge;
    if (!k) return [];
    if (k.documents) return planFromDocuments(this.deps.catalog, k.namespace, k.documents);
    return planFromRetrieval(this.deps.catalog, k.namespace, req.searchText, k.topK);
  }
}
