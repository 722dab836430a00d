/**
 * Whether a query's prompt runs under its context's arrival (Session.injectKVAndPrefill) or after the chunks were
 * injected one by one. Measured side by side on an H200 (8B shape, 256-token chunks, bench/results/gpu/
 * ttft-overlap-ab-h200.json): overlapping wins up to 16k context tokens (64 chunks: 0-11% at 8k-16k, more at 1k-4k,
 * where the prompt's compute is a larger share) and loses 15-25% at 32k (128 chunks), where placing the context
 * falls behind its arrival. Why it falls behind with that many chunks is not pinned down yet.
 */
export const OVERLAP_MAX_CHUNKS = 64;

export function overlapsPrompt(chunks: number): boolean {
  return chunks <= OVERLAP_MAX_CHUNKS;
}
