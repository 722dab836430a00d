/** Messages between DocumentTokenizer (document-tokenizer.ts) and its worker (tokenize-worker.ts). */
import type { WireError } from '../query/kv-fetch-protocol.ts';

export interface TokenizeRequest {
  id: number;
  text: string;
  budget: number;
}

/** Chunks as token ranges of `tokenIds` (sent once) with their texts. */
export interface TokenizedChunk {
  index: number;
  start: number;
  end: number;
  text: string;
}

export type TokenizeReply =
  | { id: number; tokenIds: Uint32Array; chunks: TokenizedChunk[] }
  | { id: number; error: WireError };
