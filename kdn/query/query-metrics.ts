import type { Counter, Histogram } from 'prom-client';

/**
 * The metrics a query records: the part of kdn's registry (`KdnMetrics` in kdn/api/metrics.ts) the query service
 * writes, named here so the query layer does not depend on the API layer above it.
 */
export interface QueryMetrics {
  readonly queryTokens: Counter<'kind'>;
  readonly queryStage: Histogram<'stage' | 'mode'>;
  readonly chunkFetches: Counter<'tier'>;
}
