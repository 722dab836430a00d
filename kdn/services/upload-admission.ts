import type { Engine } from '../../engine-adapter/types.ts';
import type { CodecSpec } from '../../storage/kv-object/types.ts';
import type { Catalog } from '../catalog.ts';
import type { KdnConfig } from '../config.ts';
import { checkIngestBounds, estimateIngest, type IngestEstimate } from '../ingest/ingest-bounds.ts';
import type { TokenizedDocument } from '../ingest/ingest-thread.ts';
import type { IngestJobs } from '../ingest/jobs.ts';

export type UploadLimits = Pick<KdnConfig, 'maxUploadTokens' | 'maxUploadKvBytes' | 'tenantQuotaTokens' | 'tenantQuotaKvBytes'>;

/**
 * Admits an upload before the engine spends anything on it: tokenizes it and checks what it would cost against the
 * per-upload limits and the tenant's quota (what it uploaded, shared namespaces included, plus its uploads still
 * running).
 */
export class UploadAdmission {
  constructor(
    /** `levels`: the extra codecs ingest stores beside `codec`, whose objects count too. */
    private readonly parts: { engine: Engine; codec: CodecSpec; levels?: CodecSpec[]; catalog: Catalog; jobs: IngestJobs },
    private readonly limits: UploadLimits,
  ) {}

  async admit(tenant: string, text: string): Promise<{ tokenized: TokenizedDocument; expected: IngestEstimate }> {
    const { engine, codec, catalog, jobs } = this.parts;
    const tokenized = await jobs.tokenize(text);
    const lengths = tokenized.chunks.map((chunk) => chunk.tokenIds.length);
    const estimates = [codec, ...(this.parts.levels ?? [])].map((c) => estimateIngest(engine.info, c, lengths));
    const expected = {
      ...estimates[0]!,
      objects: estimates.reduce((n, e) => n + e.objects, 0),
      kvBytes: estimates.reduce((n, e) => n + e.kvBytes, 0),
    };
    const held = { tokens: 0, kvBytes: 0 };
    for (const m of catalog.uploadedBy(tenant)) {
      held.tokens += m.tokens;
      held.kvBytes += m.bytes;
    }
    for (const job of jobs.unfinished(tenant)) {
      held.tokens += job.expected?.tokens ?? 0;
      held.kvBytes += job.expected?.kvBytes ?? 0;
    }
    const { maxUploadTokens, maxUploadKvBytes, tenantQuotaTokens, tenantQuotaKvBytes } = this.limits;
    checkIngestBounds(
      { maxUploadTokens, maxUploadKvBytes, tenantTokens: tenantQuotaTokens, tenantKvBytes: tenantQuotaKvBytes },
      expected,
      held,
    );
    return { tokenized, expected };
  }
}
