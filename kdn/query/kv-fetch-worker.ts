/**
 * A fetch worker: its own edge client receives objects and verifies every layer on this thread; each object's
 * verified blocks go by transfer (no copy) where the pool says, to the pool or straight to the engine's thread
 * (block-outlet.ts). A block read from a same-host edge's file goes there as where it lies, and one received over
 * HTTP as where this thread spooled it (receive-spool.ts), or else with its bytes, whose buffers the engine's thread
 * sends back once it injected them, and later objects are received into them (common/reused-buffers.ts). Started by
 * kv-fetch-worker.js with the client's options as workerData.
 */
import { isDeepStrictEqual } from 'node:util';
import { parentPort, workerData, type MessagePort } from 'node:worker_threads';
import { KdnError, toWireError } from '../../common/errors.ts';
import type { ReturnedBuffers, RoutedBlocks } from '../../engine-adapter/worker/routed-stream.ts';
import { EdgeClient } from '../../edge/client/client.ts';
import { readKVObject } from '../../storage/kv-object/index.ts';
import { parseTransformTable } from '../../storage/kv-object/codecs/transform-table.ts';
import { transformTables } from '../../storage/kv-object/codecs/transform-tables.ts';
import type { KVExpectation } from '../../storage/kv-object/types.ts';
import { BlockOutlet } from './block-outlet.ts';
import { HandOverWindow } from './hand-over-window.ts';
import type { FromWorker, ToWorker, WorkerSetup } from './kv-fetch-protocol.ts';
import { ReusedBuffers } from '../../common/reused-buffers.ts';
import { ReceiveSpool } from './receive-spool.ts';
import { ShmSource } from './shm-source.ts';
import { ShmHandOver, type HandOverOrder, type ShmOutcome } from './shm-hand-over.ts';

const port = parentPort!;
const setup = workerData as WorkerSetup;
const client = new EdgeClient(setup.edge);
const buffers = new ReusedBuffers(setup.receiveBufferBytes);
const window = new HandOverWindow(setup.handOverBytes);
const spool = ReceiveSpool.at(setup.spool.dir, setup.spool.bytes);
const shm = setup.sharedMemory ? new ShmSource(client, { buffers, blockingReads: true }) : undefined;
const aborts = new Map<number, AbortController>();
/** Objects in flight, or arrived with their blocks held until the pool says where they go. */
const outlets = new Map<number, BlockOutlet>();

function post(message: FromWorker, transfer: ArrayBuffer[] = []): void {
  port.postMessage(message, transfer);
}

/** What the receive buffers and the spool took so far, for the pool's counters (after an object, and a route). */
function postStats(): void {
  post({ type: 'buffers', stats: { ...buffers.stats }, ...(spool ? { spool: { ...spool.stats } } : {}) });
}

/**
 * The block's own ArrayBuffer when it spans all of it or was received into a receive buffer, else a copy in a buffer
 * of its own (a block cut from a larger socket chunk, whose buffer the reader still uses). A copy, not .slice(): on a
 * Buffer that is a view of the same memory, and transferring it would detach the chunk under the reader.
 */
function owned(bytes: Uint8Array): Uint8Array {
  if (buffers.owns(bytes)) return bytes;
  if (bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength && bytes.buffer instanceof ArrayBuffer) return bytes;
  const copy = buffers.take(bytes.byteLength);
  copy.set(bytes);
  return copy;
}

const handOver = shm && new ShmHandOver(shm, owned);

async function open(id: number, key: string, expect: KVExpectation, deliverNow: boolean, order: HandOverOrder): Promise<void> {
  const abort = new AbortController();
  aborts.set(id, abort);
  const outlet = new BlockOutlet(id, post, window, (buffer) => buffers.give(buffer), spool);
  if (deliverNow) outlet.deliver();
  outlets.set(id, outlet);
  const progress = { received: (): number => 0 };
  try {
    const fromShm = await openFromShm(id, key, expect, outlet, abort.signal, order);
    if (fromShm !== 'done') await receiveOverHttp(id, key, expect, outlet, abort.signal, progress, fromShm);
  } catch (err) {
    outlet.fail(toWireError(err), progress.received());
  } finally {
    aborts.delete(id);
    if (outlet.settled) outlets.delete(id);
    postStats();
  }
}

/**
 * Hands over `key` from a same-host edge's shared memory: its header as soon as that is read, then its layers a few
 * at a time as they are verified (shm-hand-over.ts). Undefined: nothing was sent, the object goes over HTTP.
 */
async function openFromShm(
  id: number,
  key: string,
  expect: KVExpectation,
  outlet: BlockOutlet,
  signal: AbortSignal,
  order: HandOverOrder,
): Promise<ShmOutcome | undefined> {
  const file = await shm?.open(key, expect);
  if (!file) return undefined;
  post({ type: 'header', id, header: file.header, servedFrom: 'shm', edge: file.edge });
  return handOver!.add(file, outlet, signal, order);
}

/**
 * Receives `key` over HTTP, verifying each layer as it streams in. `resume`: a shared-memory file already sent its
 * header and the layers before `from`; the edge's copy must match that header exactly (the blocks are checked
 * against it on the other side), and only its later layers are handed over.
 */
async function receiveOverHttp(
  id: number,
  key: string,
  expect: KVExpectation,
  outlet: BlockOutlet,
  signal: AbortSignal,
  progress: { received: () => number },
  resume: Exclude<ShmOutcome, 'done'> | undefined,
): Promise<void> {
  const got = await client.get(key, { signal });
  progress.received = () => got.body.received;
  const reader = await readKVObject(got.body, expect, { hashOffThread: false, receiveInto: (size) => buffers.take(size) });
  if (resume === undefined) post({ type: 'header', id, header: reader.header, servedFrom: got.servedFrom, edge: got.edge });
  else if (isDeepStrictEqual(reader.header, resume.header)) post({ type: 'source', id, servedFrom: got.servedFrom, edge: got.edge });
  else throw new KdnError('KV_MISMATCH', `the edge's copy of ${key} differs from its shared-memory file`, { hint: 'refetch the object' });
  const from = resume?.from ?? 0;
  for await (const block of reader.layers) {
    if (block.layer >= from) outlet.add([{ layer: block.layer, bytes: owned(block.encoded) }], got.body.received);
  }
  outlet.end(got.body.received);
}

/** Routes an object's blocks to the engine's port; one no longer held (aborted, failed) fails the engine's stream. */
function route(id: number, target: MessagePort): void {
  const outlet = outlets.get(id);
  if (!outlet) {
    const error = toWireError(
      new KdnError('EDGE_UNAVAILABLE', 'the KV object is no longer held by its fetch thread', { hint: 'refetch the object' }),
    );
    target.postMessage({ type: 'fail', error } satisfies RoutedBlocks);
    return;
  }
  // The engine's side sends the buffers back on this port after injecting them, then closes it.
  target.on('message', (message: ReturnedBuffers) => {
    window.returned(target, message.buffers);
    for (const buffer of message.buffers) buffers.give(buffer);
  });
  target.on('close', () => window.closed(target));
  outlet.route(target);
  if (outlet.settled) outlets.delete(id);
  // The blocks held until now were spooled (or sent) just above.
  postStats();
}

function deliver(id: number): void {
  const outlet = outlets.get(id);
  outlet?.deliver();
  if (outlet?.settled) outlets.delete(id);
}

/** Stops a download in flight (it then fails), or drops the blocks of one that arrived and was never asked for. */
function abort(id: number): void {
  const download = aborts.get(id);
  if (download) download.abort();
  else {
    outlets.get(id)?.drop();
    outlets.delete(id);
  }
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
  if (message.type === 'open') {
    const order = { interleave: message.interleave, verifyAlongside: setup.verifyAlongside };
    void open(message.id, message.key, message.expect, message.deliver, order);
  } else if (message.type === 'deliver') deliver(message.id);
  else if (message.type === 'route') route(message.id, message.port);
  else if (message.type === 'table') registerTable(message.bytes);
  else abort(message.id);
});
