/**
 * A fetch worker: its own edge client receives objects, verifies every layer on this thread and hands each block to
 * the pool by transfer (no copy). Started by kv-fetch-worker.js with the client's options as workerData.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { toKdnError } from '../../common/errors.ts';
import { EdgeClient } from '../../edge/client/client.ts';
import { readKVObject } from '../../storage/kv-object/index.ts';
import { parseTransformTable } from '../../storage/kv-object/codecs/transform-table.ts';
import { transformTables } from '../../storage/kv-object/codecs/transform-tables.ts';
import type { FromWorker, ToWorker, WorkerSetup } from './kv-fetch-protocol.ts';
import { ShmSource } from './shm-source.ts';

const port = parentPort!;
const setup = workerData as WorkerSetup;
const client = new EdgeClient(setup.edge);
const shm = setup.sharedMemory ? new ShmSource(client) : undefined;
const aborts = new Map<number, AbortController>();

function post(message: FromWorker, transfer: ArrayBuffer[] = []): void {
  port.postMessage(message, transfer);
}

/**
 * The block's own ArrayBuffer when it spans all of it, else a copy that does (a block cut from a larger socket chunk,
 * whose buffer the reader still uses). A copy, not .slice(): on a Buffer that is a view of the same memory, and
 * transferring it would detach the chunk under the reader.
 */
function owned(bytes: Uint8Array): Uint8Array {
  return bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength && bytes.buffer instanceof ArrayBuffer
    ? bytes
    : new Uint8Array(bytes);
}

async function open(id: number, key: string, expect: Extract<ToWorker, { type: 'open' }>['expect']): Promise<void> {
  const abort = new AbortController();
  aborts.set(id, abort);
  let received = (): number => 0;
  try {
    if (await openFromShm(id, key, expect)) return;
    const got = await client.get(key, { signal: abort.signal });
    received = () => got.body.received;
    const reader = await readKVObject(got.body, expect, { hashOffThread: false });
    post({ type: 'header', id, header: reader.header, servedFrom: got.servedFrom, edge: got.edge });
    for await (const block of reader.layers) {
      const bytes = owned(block.encoded);
      post({ type: 'layer', id, layer: block.layer, bytes, received: received() }, [bytes.buffer as ArrayBuffer]);
    }
    post({ type: 'end', id, received: received() });
  } catch (err) {
    const e = toKdnError(err);
    post({ type: 'error', id, error: { code: e.code, message: e.message, ...(e.hint ? { hint: e.hint } : {}) }, received: received() });
  } finally {
    aborts.delete(id);
  }
}

/** Sends `key` read and verified from a same-host edge's shared memory, all layers in one message; false: use HTTP. */
async function openFromShm(id: number, key: string, expect: Extract<ToWorker, { type: 'open' }>['expect']): Promise<boolean> {
  const fast = await shm?.read(key, expect, false);
  if (!fast) return false;
  post({ type: 'header', id, header: fast.header, servedFrom: 'shm', edge: fast.edge });
  // Layers stored as is are views of the file's buffer, which moves to the pool once; lz4 layers own theirs.
  const buffers = new Set<ArrayBuffer>([fast.buffer]);
  const layers = fast.blocks.map((block) => {
    const bytes = block.encoded.buffer === fast.buffer ? block.encoded : owned(block.encoded);
    buffers.add(bytes.buffer as ArrayBuffer);
    return { layer: block.layer, bytes };
  });
  post({ type: 'layers', id, layers, received: fast.bytes }, [...buffers]);
  post({ type: 'end', id, received: fast.bytes });
  return true;
}

/** The pool verified the table already; a table that fails here only costs its objects the exact size check. */
function registerTable(bytes: Uint8Array): void {
  try {
    transformTables.register(parseTransformTable(bytes));
  } catch {
    // see above
  }
}

port.on('message', (message: ToWorker) => {
  if (message.type === 'open') void open(message.id, message.key, message.expect);
  else if (message.type === 'table') registerTable(message.bytes);
  else aborts.get(message.id)?.abort();
});
