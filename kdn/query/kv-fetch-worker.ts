/**
 * A fetch worker: its own edge client receives objects and verifies every layer on this thread; each object's
 * verified blocks go by transfer (no copy) where the pool says, to the pool or straight to the engine's thread
 * (block-outlet.ts). The engine's thread sends a routed object's buffers back once it injected them, and later
 * objects are received into them (receive-buffers.ts). Started by kv-fetch-worker.js with the client's options as
 * workerData.
 */
import { isDeepStrictEqual } from 'node:util';
import { parentPort, workerData, type MessagePort } from 'node:worker_threads';
import { KdnError, toWireError } from '../../common/errors.ts';
import type { ReturnedBuffers, RoutedBlocks } from '../../engine-adapter/worker/routed-stream.ts';
import { EdgeClient } from '../../edge/client/client.ts';
import { readKVObject } from '../../storage/kv-object/index.ts';
import { parseTransformTable } from '../../storage/kv-object/codecs/transform-table.ts';
import { transformTables } from '../../storage/kv-object/codecs/transform-tables.ts';
import type { KVExpectation, KVHeader } from '../../storage/kv-object/types.ts';
import { BlockOutlet } from './block-outlet.ts';
import type { FromWorker, ToWorker, WorkerSetup } from './kv-fetch-protocol.ts';
import { ReceiveBuffers } from './receive-buffers.ts';
import { ShmSource } from './shm-source.ts';

const port = parentPort!;
const setup = workerData as WorkerSetup;
const client = new EdgeClient(setup.edge);
const buffers = new ReceiveBuffers(setup.receiveBufferBytes);
const shm = setup.sharedMemory ? new ShmSource(client, { buffers, blockingReads: true }) : undefined;
const aborts = new Map<number, AbortController>();
/** Objects in flight, or arrived with their blocks held until the pool says where they go. */
const outlets = new Map<number, BlockOutlet>();

function post(message: FromWorker, transfer: ArrayBuffer[] = []): void {
  port.postMessage(message, transfer);
}

/**
 * The block's own ArrayBuffer when it spans all of it, else a copy in a buffer of its own (a block cut from a larger
 * socket chunk, whose buffer the reader still uses). A copy, not .slice(): on a Buffer that is a view of the same
 * memory, and transferring it would detach the chunk under the reader.
 */
function owned(bytes: Uint8Array): Uint8Array {
  if (bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength && bytes.buffer instanceof ArrayBuffer) return bytes;
  const copy = buffers.take(bytes.byteLength);
  copy.set(bytes);
  return copy;
}

async function open(id: number, key: string, expect: KVExpectation, deliverNow: boolean): Promise<void> {
  const abort = new AbortController();
  aborts.set(id, abort);
  const outlet = new BlockOutlet(id, post);
  if (deliverNow) outlet.deliver();
  outlets.set(id, outlet);
  const progress = { received: (): number => 0 };
  try {
    const fromShm = await openFromShm(id, key, expect, outlet, abort.signal);
    if (fromShm !== 'done') await receiveOverHttp(id, key, expect, outlet, abort.signal, progress, fromShm);
  } catch (err) {
    outlet.fail(toWireError(err), progress.received());
  } finally {
    aborts.delete(id);
    if (outlet.settled) outlets.delete(id);
    post({ type: 'buffers', stats: { ...buffers.stats } });
  }
}

/**
 * Hands over `key` from a same-host edge's shared memory: its header as soon as that is read, then every layer at
 * once when all are verified. Files are hashed one per event-loop turn, after the headers of the objects queued
 * on this thread went out, so the engine starts placing the first objects while the last are still being read.
 * 'done': handed over whole. Undefined: nothing sent, the object goes over HTTP. A header: it was sent, but a layer
 * failed verification, so the rest must come over HTTP behind that same header.
 */
async function openFromShm(
  id: number,
  key: string,
  expect: KVExpectation,
  outlet: BlockOutlet,
  signal: AbortSignal,
): Promise<'done' | KVHeader | undefined> {
  const file = await shm?.open(key, expect);
  if (!file) return undefined;
  post({ type: 'header', id, header: file.header, servedFrom: 'shm', edge: file.edge });
  const fast = await inTurn(async () => {
    if (!signal.aborted) return shm!.verify(file, false);
    await file.close();
    throw new KdnError('TIMEOUT', 'edge request aborted by the caller');
  });
  if (!fast) return file.header;
  // Layers stored as is are views of the file's buffer, which moves once; lz4 layers own theirs.
  const blocks = fast.blocks.map((block) => ({
    layer: block.layer,
    bytes: block.encoded.buffer === fast.buffer ? block.encoded : owned(block.encoded),
  }));
  outlet.add(blocks, fast.bytes);
  outlet.end(fast.bytes);
  return 'done';
}

/** The last shared-memory file queued to be verified here (see inTurn). */
let verifying: Promise<unknown> = Promise.resolve();

/**
 * Runs `verify` after those queued before it, in an event-loop turn of its own: messages that came meanwhile (other
 * objects to open, routes to the engine's thread for the objects verified already) are handled between two files.
 */
function inTurn<T>(verify: () => Promise<T>): Promise<T> {
  const turn = verifying.then(() => new Promise((resolve) => setImmediate(resolve))).then(verify);
  verifying = turn.catch(() => undefined);
  return turn;
}

/**
 * Receives `key` over HTTP, verifying each layer as it streams in. `announced`: the header the shared-memory file
 * already sent, which the edge's copy must match exactly (the blocks are checked against it on the other side).
 */
async function receiveOverHttp(
  id: number,
  key: string,
  expect: KVExpectation,
  outlet: BlockOutlet,
  signal: AbortSignal,
  progress: { received: () => number },
  announced: KVHeader | undefined,
): Promise<void> {
  const got = await client.get(key, { signal });
  progress.received = () => got.body.received;
  const reader = await readKVObject(got.body, expect, { hashOffThread: false });
  if (announced === undefined) post({ type: 'header', id, header: reader.header, servedFrom: got.servedFrom, edge: got.edge });
  else if (isDeepStrictEqual(reader.header, announced)) post({ type: 'source', id, servedFrom: got.servedFrom, edge: got.edge });
  else throw new KdnError('KV_MISMATCH', `the edge's copy of ${key} differs from its shared-memory file`, { hint: 'refetch the object' });
  for await (const block of reader.layers) outlet.add([{ layer: block.layer, bytes: owned(block.encoded) }], got.body.received);
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
    for (const buffer of message.buffers) buffers.give(buffer);
  });
  outlet.route(target);
  if (outlet.settled) outlets.delete(id);
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
  else outlets.delete(id);
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
  if (message.type === 'open') void open(message.id, message.key, message.expect, message.deliver);
  else if (message.type === 'deliver') deliver(message.id);
  else if (message.type === 'route') route(message.id, message.port);
  else if (message.type === 'table') registerTable(message.bytes);
  else abort(message.id);
});
