/**
 * Whether a query's prompt runs under its context's arrival (Session.injectKVAndPrefill) or after the chunks were
 * injected one by one. Measured side by side on an H200 (8B shape, 256-token chunks, bench/results/gpu/
 * ttft-overlap-ab-h200.json): overlapping wins up to 16k context tokens (64 chunks: 0-11% at 8k-16k, more at 1k-4k,
 * where the prompt's compute is a larger share) and loses 15-25% at 32k (128 chunks), where placing the context
 * falls behind its arrival. With the engine on its own thread (bench/results/gpu/ttft-overlap-long-h100.json, the
 * paths alternated on one H100 host) 32k over the same-host fast path is a tie, and over sockets chunk by chunk is
 * 18-20% faster: the prompt's first piece needs the first layers of all 128 chunks, which over sockets were in only
 * 230-340 ms into the query, while chunk by chunk places each chunk as it comes.
 */
export const OVERLAP_MAX_CHUNKS = 64;

export function overlapsPrompt(chunks: number): boolean {
  return chunks <= OVERLAP_MAX_CHUNKS;
}
