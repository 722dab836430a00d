/** Messages between KvFetchPool (kv-fetch-pool.ts) and its workers (kv-fetch-worker.ts). */
import type { MessagePort } from 'node:worker_threads';
import type { EdgeClientOptions } from '../../edge/client/client.ts';
import type { WireError } from '../../common/errors.ts';
import type { BlockMessage } from '../../engine-adapter/worker/routed-stream.ts';
import type { KVExpectation, KVHeader } from '../../storage/kv-object/types.ts';
import type { FetchedFrom } from './kv-fetcher.ts';
import type { ReusedBufferStats } from '../../common/reused-buffers.ts';
import type { SpoolStats } from './receive-spool.ts';

/** What a worker's edge client is built from (no functions: it crosses a thread boundary). */
export type WorkerEdgeOptions = Omit<EdgeClientOptions, 'signer'>;

/** A worker's workerData. */
export interface WorkerSetup {
  edge: WorkerEdgeOptions;
  /** Read objects of same-host edges from shared memory (shm-source.ts) before asking over HTTP. */
  sharedMemory: boolean;
  /** Most bytes of buffers the worker keeps to receive into again (common/reused-buffers.ts); 0 keeps none. */
  receiveBufferBytes: number;
  /** Most bytes the worker has out on the engine's ports at once (hand-over-window.ts); 0 for no bound. */
  handOverBytes: number;
  /** FetchPoolOptions.verifyAlongside. */
  verifyAlongside: boolean;
  /** Where the worker spools blocks routed to the engine's thread, and the most bytes it holds there (receive-spool.ts). */
  spool: { dir: string; bytes: number };
}

/**
 * A worker holds an object's verified blocks until the pool says where they go: `deliver` to the pool (its reader's
 * layers were read on the event loop), or `route` to a port of the engine's thread. An object opened with `deliver`
 * goes to the pool from its first block, without being asked. `abort` stops the download and drops what is held.
 */
export type ToWorker =
  /** `interleave`: see KvFetchOptions (kv-fetcher.ts). */
  | { type: 'open'; id: number; key: string; expect: KVExpectation; deliver: boolean; interleave: boolean }
  | { type: 'deliver'; id: number }
  | { type: 'route'; id: number; port: MessagePort }
  | { type: 'abort'; id: number }
  /** A verified transform table's bytes, so the worker checks its objects' block sizes exactly. */
  | { type: 'table'; bytes: Uint8Array };

export type FromWorker =
  | { type: 'header'; id: number; header: KVHeader; servedFrom: FetchedFrom; edge: string }
  /** The blocks come from elsewhere than the header said: a shared-memory file failed verification, HTTP took over. */
  | { type: 'source'; id: number; servedFrom: FetchedFrom; edge: string }
  /** Verified layer blocks for the pool to read; the buffers behind their bytes were transferred. */
  | { type: 'layers'; id: number; layers: BlockMessage[]; received: number }
  /** Bytes received so far, while blocks are held or routed (no payload). */
  | { type: 'progress'; id: number; received: number }
  /** The whole object was received and verified (its blocks may still be held or on their way elsewhere). */
  | { type: 'arrived'; id: number; received: number }
  /** The last block delivered to the pool was sent: the object arrived and is all with the pool. */
  | { type: 'end'; id: number; received: number }
  | { type: 'error'; id: number; error: WireError; received: number }
  /** The worker's receive buffers so far, after each object it handled. */
  | { type: 'buffers'; stats: ReusedBufferStats; spool?: SpoolStats };
