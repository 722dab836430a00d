import { createRequire } from 'node:module';
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import { KdnError } from '../../common/errors.ts';
import { LAYER_DIGESTS, layerDigest, type LayerDigestVersion } from './layer-digest.ts';

/**
 * Layer digests (layer-digest.ts) of large blocks on worker threads, so the event loop keeps receiving bytes while
 * blocks of parallel streams hash on other cores. A block's ArrayBuffer is transferred to the worker and back (no
 * copy); while it is away the caller must not touch it, and gets the bytes back with the digest.
 */

/**
 * The worker runs from source, not a module file, so that it starts in milliseconds (a TypeScript worker registers
 * a loader first). It hashes by algorithm name (layer-digest.ts LAYER_DIGESTS), the native package found by path.
 */
const WORKER_SOURCE = `
const { parentPort } = require('node:worker_threads');
const { createHash } = require('node:crypto');
const { blake3 } = require(${JSON.stringify(createRequire(import.meta.url).resolve('@napi-rs/blake-hash'))});
const digests = {
  sha256: (bytes) => createHash('sha256').update(bytes).digest('hex'),
  blake3: (bytes) => blake3(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)).toString('hex'),
};
parentPort.on('message', ({ id, algorithm, bytes }) => {
  parentPort.postMessage({ id, digest: digests[algorithm](bytes), bytes }, [bytes.buffer]);
});
`;

interface Reply {
  id: number;
  digest: string;
  bytes: Uint8Array;
}

interface Pending {
  resolve: (reply: Reply) => void;
  reject: (err: Error) => void;
}

/** One worker; it is referenced only while hashes are pending, so an idle pool never keeps the process alive. */
class HashWorker {
  /** False once the worker failed or exited; the pool then starts another. */
  alive = true;
  private readonly worker: Worker;
  private readonly pending = new Map<number, Pending>();

  constructor() {
    this.worker = new Worker(WORKER_SOURCE, { eval: true });
    this.worker.unref();
    this.worker.on('message', (reply: Reply) => {
      const waiter = this.pending.get(reply.id);
      this.pending.delete(reply.id);
      if (this.pending.size === 0) this.worker.unref();
      waiter?.resolve(reply);
    });
    this.worker.on('error', (err) => this.failAll(`hash worker failed: ${err.message}`));
    this.worker.on('exit', (code) => this.failAll(`hash worker exited with code ${code}`));
  }

  get load(): number {
    return this.pending.size;
  }

  hash(id: number, version: LayerDigestVersion, bytes: Uint8Array): Promise<Reply> {
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.worker.ref();
      this.worker.postMessage({ id, algorithm: LAYER_DIGESTS[version], bytes }, [bytes.buffer as ArrayBuffer]);
    });
  }

  /** The blocks it held are gone with it, so their reads fail (the caller refetches); later blocks go to a new worker. */
  private failAll(message: string): void {
    this.alive = false;
    const err = new KdnError('INTERNAL', message, { hint: 'refetch the object' });
    for (const waiter of this.pending.values()) waiter.reject(err);
    this.pending.clear();
  }
}

/** Leaves one core to the event loop; more than four workers outrun what one event loop can receive. */
const POOL_SIZE = Math.max(1, Math.min(4, availableParallelism() - 1));
const workers: HashWorker[] = [];
let nextId = 0;

/** True when `bytes` owns its whole ArrayBuffer, so it can be moved to a worker and back. */
function transferable(bytes: Uint8Array): boolean {
  return bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength && bytes.buffer instanceof ArrayBuffer;
}

/** The layer digest of `bytes`, and the bytes (a new view when they travelled to a worker: use it, not the old one). */
export async function layerDigestOffThread(version: LayerDigestVersion, bytes: Uint8Array): Promise<{ digest: string; bytes: Uint8Array }> {
  if (!transferable(bytes)) return { digest: layerDigest(version, bytes), bytes };
  for (let i = workers.length - 1; i >= 0; i--) if (!workers[i]!.alive) workers.splice(i, 1);
  if (workers.length < POOL_SIZE) workers.push(new HashWorker());
  const worker = workers.reduce((best, w) => (w.load < best.load ? w : best));
  const reply = await worker.hash(nextId++, version, bytes);
  return { digest: reply.digest, bytes: reply.bytes };
}
