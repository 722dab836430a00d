import { KdnError } from '../../common/errors.ts';
import type { ModelInfo } from '../../engine-adapter/types.ts';
import { codecEntry, type CodecSpec } from '../../storage/kv-object/index.ts';
import { blockSizeBounds } from '../../storage/kv-object/header.ts';

/** Room for one object's header and framing on top of its layer blocks. */
const HEADER_ALLOWANCE = 8 * 1024;

/** What an upload is expected to cost, worked out from its tokens before any KV is computed. */
export interface IngestEstimate {
  tokens: number;
  chunks: number;
  /** Chunk objects: an independent one per chunk and a chained one per chunk within the context length. */
  objects: number;
  /** Upper bound of the KV bytes the objects take. */
  kvBytes: number;
}

export interface IngestLimits {
  maxUploadTokens: number;
  maxUploadKvBytes: number;
  /** What one tenant may hold in all, counting uploads still running. */
  tenantTokens: number;
  tenantKvBytes: number;
}

/** The estimate for a document cut into chunks of `chunkLengths` tokens, with the same chain rule as ingest's planKeys. */
export function estimateIngest(info: ModelInfo, codec: CodecSpec, chunkLengths: readonly number[]): IngestEstimate {
  const entry = codecEntry(codec.name);
  // Before a transform table is fitted its block sizes are unknown: the widest block bounds them.
  const bound = entry.available(codec) ? entry.bind(codec) : undefined;
  const objectBytes = (tokens: number): number => {
    const shape = { tokens, kvHeads: info.kvHeads, headDim: info.headDim };
    let bytes = HEADER_ALLOWANCE;
    for (let layer = 0; layer < info.layers; layer++) bytes += blockSizeBounds(codec, bound, shape, layer).max;
    return bytes;
  };
  let tokens = 0;
  let objects = 0;
  let kvBytes = 0;
  let sequence = 1;
  chunkLengths.forEach((length, index) => {
    tokens += length;
    objects += 1;
    kvBytes += objectBytes(length);
    sequence += length;
    // A chain's first object is its chunk's independent one; the chain stops at the model's context length.
    if (index > 0 && sequence <= info.maxPositionEmbeddings) {
      objects += 1;
      kvBytes += objectBytes(length);
    }
  });
  return { tokens, chunks: chunkLengths.length, objects, kvBytes };
}

/**
 * Refuses an upload over the per-upload limits (413) or one that would take its tenant past its quota (403), before
 * the engine spends anything on it. `held` is what the tenant has stored and has running.
 */
export function checkIngestBounds(limits: IngestLimits, estimate: IngestEstimate, held: { tokens: number; kvBytes: number }): void {
  if (estimate.tokens > limits.maxUploadTokens || estimate.kvBytes > limits.maxUploadKvBytes) {
    throw new KdnError(
      'PAYLOAD_TOO_LARGE',
      `this upload would be ${estimate.tokens} tokens and about ${estimate.kvBytes} bytes of KV, over the limit of ${limits.maxUploadTokens} tokens and ${limits.maxUploadKvBytes} bytes per upload`,
      {
        hint: 'split the document; the server sets the limits with KDN_MAX_UPLOAD_TOKENS and KDN_MAX_UPLOAD_KV',
        details: { expected: estimate },
      },
    );
  }
  if (held.tokens + estimate.tokens > limits.tenantTokens || held.kvBytes + estimate.kvBytes > limits.tenantKvBytes) {
    throw new KdnError(
      'FORBIDDEN',
      `this upload would take the tenant past its quota (${limits.tenantTokens} tokens, ${limits.tenantKvBytes} bytes of KV; it holds ${held.tokens} tokens and ${held.kvBytes} bytes)`,
      {
        hint: 'delete documents you no longer need (GET /v1/usage shows what you hold), or ask the operator to raise KDN_TENANT_QUOTA_TOKENS / KDN_TENANT_QUOTA_KV',
        details: { expected: estimate, held },
      },
    );
  }
}
