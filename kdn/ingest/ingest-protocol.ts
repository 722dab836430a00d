/** Messages between IngestThread (ingest-thread.ts) and its worker (ingest-worker.ts). */
import type { EncodeMeta } from '../../storage/kv-object/index.ts';
import type { KVTensors } from '../../storage/kv-object/types.ts';
import type { WireError } from '../../common/errors.ts';

export type IngestRequest =
  | { id: number; op: 'tokenize'; text: string; budget: number }
  /** The tensors' arrays were transferred. */
  | { id: number; op: 'encode'; tensors: KVTensors; meta: EncodeMeta }
  /** A serialized transform table for the thread's registry, sent before the first object that names it. */
  | { id: number; op: 'table'; bytes: Uint8Array };

/** Chunks as token ranges of `tokenIds` (sent once) with their texts. */
export interface TokenizedChunk {
  index: number;
  start: number;
  end: number;
  text: string;
}

export type IngestReply =
  | { id: number; op: 'tokenize'; tokenIds: Uint32Array; chunks: TokenizedChunk[] }
  /** The object's bytes, transferred. */
  | { id: number; op: 'encode'; bytes: Uint8Array }
  | { id: number; op: 'table' }
  | { id: number; error: WireError };
