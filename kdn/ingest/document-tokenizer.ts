import { Worker } from 'node:worker_threads';
import { KdnError } from '../../common/errors.ts';
import type { Chunk } from './chunker.ts';
import type { TokenizeReply, TokenizeRequest } from './tokenize-protocol.ts';

const ENTRY = new URL('./tokenize-worker.js', import.meta.url);

export interface TokenizedDocument {
  tokenIds: number[];
  chunks: Chunk[];
}

/**
 * Tokenizes and chunks ingested documents on a worker thread (tokenize-worker.ts), one document at a time, so large
 * uploads do not hold the event loop. The thread starts with the first document and is unref'd while idle.
 */
export class DocumentTokenizer {
  private worker: Worker | undefined;
  private readonly pending = new Map<number, { resolve: (doc: TokenizedDocument) => void; reject: (err: KdnError) => void }>();
  private nextId = 1;
  private closed = false;

  constructor(private readonly modelDir: string) {}

  tokenize(text: string, budget: number): Promise<TokenizedDocument> {
    if (this.closed) return Promise.reject(new KdnError('ENGINE_UNAVAILABLE', 'the document tokenizer is closed'));
    const worker = this.start();
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      worker.ref();
      worker.postMessage({ id, text, budget } satisfies TokenizeRequest);
    });
  }

  async close(): Promise<void> {
    this.closed = true;
    const worker = this.worker;
    this.worker = undefined;
    this.failAll('the document tokenizer was closed');
    await worker?.terminate();
  }

  private start(): Worker {
    if (this.worker) return this.worker;
    const worker = new Worker(ENTRY, { workerData: this.modelDir });
    worker.unref();
    worker.on('message', (reply: TokenizeReply) => {
      const pending = this.pending.get(reply.id);
      if (!pending) return;
      this.pending.delete(reply.id);
      if (this.pending.size === 0) worker.unref();
      if ('error' in reply) {
        pending.reject(new KdnError(reply.error.code, reply.error.message, reply.error.hint ? { hint: reply.error.hint } : {}));
        return;
      }
      const tokenIds = Array.from(reply.tokenIds);
      pending.resolve({ tokenIds, chunks: reply.chunks.map((c) => ({ index: c.index, start: c.start, tokenIds: tokenIds.slice(c.start, c.end), text: c.text })) });
    });
    const die = (message: string): void => {
      if (this.worker === worker) this.worker = undefined;
      this.failAll(message);
    };
    worker.on('error', (err) => die(`the tokenizer thread failed: ${err.message}`));
    worker.on('exit', (code) => die(`the tokenizer thread exited with code ${code}`));
    this.worker = worker;
    return worker;
  }

  private failAll(message: string): void {
    const err = new KdnError('INTERNAL', message, { hint: 'upload the document again' });
    for (const pending of this.pending.values()) pending.reject(err);
    this.pending.clear();
  }
}
