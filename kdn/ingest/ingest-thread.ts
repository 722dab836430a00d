import { Worker } from 'node:worker_threads';
import { fromWireError, KdnError } from '../../common/errors.ts';
import { transformTables, type EncodeMeta } from '../../storage/kv-object/index.ts';
import type { KVTensors } from '../../storage/kv-object/types.ts';
import type { Chunk } from './chunker.ts';
import type { IngestReply, IngestRequest } from './ingest-protocol.ts';

const ENTRY = new URL('./ingest-worker.js', import.meta.url);

export interface TokenizedDocument {
  tokenIds: number[];
  chunks: Chunk[];
}

type Reply = Exclude<IngestReply, { error: unknown }>;

/**
 * A worker thread (ingest-worker.ts) for ingest's CPU-heavy steps, tokenizing and chunking documents and encoding KV
 * objects, so large uploads and large models do not hold the event loop. Requests run one at a time in order; the
 * thread starts with the first and is unref'd while idle.
 */
export class IngestThread {
  private worker: Worker | undefined;
  private readonly pending = new Map<number, { resolve: (reply: Reply) => void; reject: (err: KdnError) => void }>();
  private nextId = 1;
  private closed = false;
  /** Tables the current worker has registered; a restarted worker starts without any. */
  private tablesSent = new Set<string>();

  constructor(private readonly modelDir: string) {}

  async tokenize(text: string, budget: number): Promise<TokenizedDocument> {
    const reply = (await this.send({ id: this.nextId++, op: 'tokenize', text, budget }, [])) as Extract<Reply, { op: 'tokenize' }>;
    const tokenIds = Array.from(reply.tokenIds);
    return {
      tokenIds,
      chunks: reply.chunks.map((c) => ({ index: c.index, start: c.start, tokenIds: tokenIds.slice(c.start, c.end), text: c.text })),
    };
  }

  /**
   * encodeKVObject on the thread (keys unrotated there first for codecs that need them before RoPE). The tensors'
   * arrays are transferred: they are unusable here afterwards. A transform table registered in this process is
   * sent to the thread before the first object that names it.
   */
  async encode(tensors: KVTensors, meta: EncodeMeta): Promise<Buffer> {
    const table = meta.codec.table;
    if (table !== undefined && !this.tablesSent.has(table)) {
      const bytes = Uint8Array.from(transformTables.get(table).bytes);
      await this.send({ id: this.nextId++, op: 'table', bytes }, [bytes.buffer as ArrayBuffer]);
      this.tablesSent.add(table);
    }
    const arrays = tensors.perLayer.flatMap((l) => [l.keys, l.values]);
    const whole = new Set(
      arrays
        .filter((a) => a.byteOffset === 0 && a.byteLength === a.buffer.byteLength && a.buffer instanceof ArrayBuffer)
        .map((a) => a.buffer as ArrayBuffer),
    );
    const reply = (await this.send({ id: this.nextId++, op: 'encode', tensors, meta: { ...meta, tokenIds: Array.from(meta.tokenIds) } }, [
      ...whole,
    ])) as Extract<Reply, { op: 'encode' }>;
    return Buffer.from(reply.bytes.buffer, reply.bytes.byteOffset, reply.bytes.byteLength);
  }

  async close(): Promise<void> {
    this.closed = true;
    const worker = this.worker;
    this.worker = undefined;
    this.failAll('the ingest thread was closed');
    await worker?.terminate();
  }

  private send(request: IngestRequest, transfer: ArrayBuffer[]): Promise<Reply> {
    if (this.closed)
      return Promise.reject(new KdnError('ENGINE_UNAVAILABLE', 'the ingest thread is closed', { hint: 'kdn is shutting down' }));
    const worker = this.start();
    return new Promise((resolve, reject) => {
      this.pending.set(request.id, { resolve, reject });
      worker.ref();
      try {
        worker.postMessage(request, transfer);
      } catch {
        // An array whose memory cannot be transferred (e.g. owned by a GPU mapping) is copied instead.
        worker.postMessage(request);
      }
    });
  }

  private start(): Worker {
    if (this.worker) return this.worker;
    const worker = new Worker(ENTRY, { workerData: this.modelDir });
    this.tablesSent = new Set();
    worker.unref();
    worker.on('message', (reply: IngestReply) => {
      const pending = this.pending.get(reply.id);
      if (!pending) return;
      this.pending.delete(reply.id);
      if (this.pending.size === 0) worker.unref();
      if ('error' in reply) pending.reject(fromWireError(reply.error));
      else pending.resolve(reply);
    });
    const die = (message: string): void => {
      if (this.worker === worker) this.worker = undefined;
      this.failAll(message);
    };
    worker.on('error', (err) => die(`the ingest thread failed: ${err.message}`));
    worker.on('exit', (code) => die(`the ingest thread exited with code ${code}`));
    this.worker = worker;
    return worker;
  }

  private failAll(message: string): void {
    const err = new KdnError('INTERNAL', message, { hint: 'upload the document again' });
    for (const pending of this.pending.values()) pending.reject(err);
    this.pending.clear();
  }
}
