/** Messages between KvFetchPool (kv-fetch-pool.ts) and its workers (kv-fetch-worker.ts). */
import type { EdgeClientOptions } from '../../edge/client/client.ts';
import type { ErrorCode } from '../../common/errors.ts';
import type { KVExpectation, KVHeader } from '../../storage/kv-object/types.ts';
import type { FetchedFrom } from './kv-fetcher.ts';

/** What a worker's edge client is built from (no functions: it crosses a thread boundary). */
export type WorkerEdgeOptions = Omit<EdgeClientOptions, 'signer'>;

/** A worker's workerData. */
export interface WorkerSetup {
  edge: WorkerEdgeOptions;
  /** Read objects of same-host edges from shared memory (shm-source.ts) before asking over HTTP. */
  sharedMemory: boolean;
}

export type ToWorker =
  | { type: 'open'; id: number; key: string; expect: KVExpectation }
  | { type: 'abort'; id: number }
  /** A verified transform table's bytes, so the worker checks its objects' block sizes exactly. */
  | { type: 'table'; bytes: Uint8Array };

export interface WireError {
  code: ErrorCode;
  message: string;
  hint?: string;
}

export type FromWorker =
  | { type: 'header'; id: number; header: KVHeader; servedFrom: FetchedFrom; edge: string }
  /** A verified layer block (lz4 already undone); `bytes` was transferred, not copied. */
  | { type: 'layer'; id: number; layer: number; bytes: Uint8Array; received: number }
  /** Every layer at once (an object read from shared memory); the buffers behind `bytes` were transferred. */
  | { type: 'layers'; id: number; layers: { layer: number; bytes: Uint8Array }[]; received: number }
  | { type: 'end'; id: number; received: number }
  | { type: 'error'; id: number; error: WireError; received: number };
