/**
 * Whether a query's prompt runs under its context's arrival (Session.injectKVAndPrefill) or after the chunks were
 * injected one by one. Measured side by side on an H200 (8B shape, 256-token chunks, bench/results/gpu/
 * ttft-overlap-ab-h200.json): overlapping wins up to 16k context tokens (64 chunks: 0-11% at 8k-16k, more at 1k-4k,
 * where the prompt's compute is a larger share) and loses 15-25% at 32k (128 chunks), where placing the context
 * falls behind its arrival. With the engine on its own thread (bench/results/gpu/ttft-overlap-long-h100.json, one
 * H100 host) 32k int4 over the same-host fast path is still faster chunk by chunk (221-230 ms against 274): the
 * context's uploads and the prompt's layers share the GPU's one queue, and placing ended 145 ms after the last block
 * was in. fp16, and int4 over sockets, were faster overlapped in that run; the limit stays one number until that is
 * confirmed in both orders.
 */
export const OVERLAP_MAX_CHUNKS = 64;

export function overlapsPrompt(chunks: number): boolean {
  return chunks <= OVERLAP_MAX_CHUNKS;
}
