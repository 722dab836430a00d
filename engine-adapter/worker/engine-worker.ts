/**
 * The engine's thread: loads the model and opens the backend (and with it the GPU device) here, so its compute and
 * its host-side work never hold the control plane's event loop. Answers the calls of remote-engine.ts in arrival
 * order per session; started by engine-worker.js with CreateEngineOptions as workerData.
 */
import { type MessagePort, parentPort, workerData } from 'node:worker_threads';
import { fromWireError, KdnError, toWireError } from '../../common/errors.ts';
import type { KVBlockReader, KVHeader, KVTensors } from '../../storage/kv-object/types.ts';
import { createEngine } from '../create-engine.ts';
import type { Engine, HandOverTimes, InjectedPrefill, Session } from '../types.ts';
import { hundredths } from '../placing-timeline.ts';
import { BlockChannel } from './block-channel.ts';
import {
  transferable,
  type Call,
  type CallValue,
  type EngineOpener,
  type EngineWorkerData,
  type FromEngine,
  type ToEngine,
} from './protocol.ts';

const port = parentPort!;
/** How often a generating sequence's abort flag is read while the thread is free to. */
const ABORT_POLL_MS = 20;
const sessions = new Map<number, Session>();
const streams = new Map<number, BlockChannel>();
/**
 * Streams of objects whose header had not come when their call was made: their 'open' puts the channel in its call's
 * list (so the call closes it however it ends) and hands its reader to the session; their 'fail' fails it.
 */
const awaited = new Map<number, { open: (channel: BlockChannel) => void; reject: (error: unknown) => void }>();

function post(message: FromEngine, transfer: ArrayBuffer[] = []): void {
  port.postMessage(message, transfer);
}

function sessionOf(id: number): Session {
  const session = sessions.get(id);
  if (!session) throw new Error(`no session ${id} on the engine thread`);
  return session;
}

function tensorArrays(tensors: KVTensors): Float32Array[] {
  return tensors.perLayer.flatMap((l) => [l.keys, l.values]);
}

/** An inject call whose objects are all in hand: one object at a position, or objects blended with a prompt. */
async function injectInHand(
  session: Session,
  call: Extract<Call, { op: 'inject' }>,
  channels: BlockChannel[],
  startedAt: number,
): Promise<CallValue> {
  if (call.tokens === undefined) {
    await session.injectKV(channels[0]!.reader, call.position);
    return { op: 'inject' };
  }
  const { tokenIds, options } = call.blend!;
  const chunks = channels.map((c, i) => ({ object: c.reader, tokenIds: tokenIds[i]! }));
  const out = await session.blendKVAndPrefill(chunks, call.tokens, options);
  return { ...prefilled(out, channels, startedAt), blended: { recomputed: out.recomputed, fullLayers: out.fullLayers } };
}

/**
 * An inject call over its streams' channels: one object at a position, or objects with a prompt (blended or not).
 * A stream opened without a header (an object still on its way, injectKVAndPrefill only) has no channel until its
 * 'open' comes.
 */
async function inject(
  session: Session,
  call: Extract<Call, { op: 'inject' }>,
  channels: (BlockChannel | undefined)[],
  startedAt: number,
): Promise<CallValue> {
  if (call.tokens === undefined || call.blend) {
    if (channels.includes(undefined)) throw new KdnError('INTERNAL', 'only injectKVAndPrefill takes objects whose header is still to come');
    return injectInHand(session, call, channels as BlockChannel[], startedAt);
  }
  const objects = call.streams.map((s, i) => {
    const channel = channels[i];
    if (channel) return channel.reader;
    if (s.tokens === undefined) throw new KdnError('INTERNAL', `stream ${s.stream} came with neither a header nor a token count`);
    return { tokens: s.tokens, reader: awaitedChannel(s.stream, channels, i) };
  });
  const out = await session.injectKVAndPrefill(objects, call.tokens, { logits: call.logits ?? 'last', timeline: call.timeline === true });
  return prefilled(out, channels as BlockChannel[], startedAt);
}

/** The reader of stream `stream` once its 'open' comes (its channel then `channels[i]`), failing on its 'fail'. */
function awaitedChannel(stream: number, channels: (BlockChannel | undefined)[], i: number): Promise<KVBlockReader> {
  const reader = new Promise<KVBlockReader>((resolve, reject) => {
    const open = (channel: BlockChannel): void => {
      channels[i] = channel;
      resolve(channel.reader);
    };
    awaited.set(stream, { open, reject });
  });
  // A failure before the session reads it (the call failed first) is the call's, not an unhandled rejection.
  reader.catch(() => undefined);
  return reader;
}

/** An injected prefill's answer: its logits, when its objects came and were placed, and its timeline if it kept one. */
function prefilled(out: InjectedPrefill, channels: readonly BlockChannel[], startedAt: number): Extract<CallValue, { op: 'inject' }> {
  const timeline = out.timeline && { ...out.timeline, layersArrivedMs: layersArrived(channels, out.timeline.startedAtEpoch) };
  return { op: 'inject', logits: out.logits, ...timesOf(out, channels, startedAt), ...(timeline ? { timeline } : {}) };
}

/** Per layer, when the last channel's block of it arrived, in milliseconds from `zeroEpoch` (null: one never did). */
function layersArrived(channels: readonly BlockChannel[], zeroEpoch: number): (number | null)[] {
  const layers = Math.max(0, ...channels.map((c) => c.reader.header.layers));
  return Array.from({ length: layers }, (_, layer) => {
    const times = channels.map((c): number | undefined => c.arrivedAt[layer]);
    if (times.includes(undefined)) return null;
    return hundredths(performance.timeOrigin + Math.max(...(times as number[])) - zeroEpoch);
  });
}

/** When the objects were placed, and how they came (HandOverTimes), on the shared epoch clock. */
function timesOf(
  { placedAt, firstLayerAt, blockWaitMs }: { placedAt: number; firstLayerAt: number; blockWaitMs: number },
  channels: readonly BlockChannel[],
  startedAt: number,
): { placedAtEpoch: number; firstLayerAtEpoch: number; blockWaitMs: number; handOverEpoch: HandOverTimes } {
  const epoch = (t: number): number => performance.timeOrigin + t;
  const firsts = channels.map((c) => c.firstBlockAt ?? placedAt);
  const ends = channels.map((c) => c.endedAt ?? placedAt);
  const handOverEpoch = {
    startedAt: epoch(startedAt),
    firstBlockAt: epoch(firsts.length > 0 ? Math.min(...firsts) : placedAt),
    receivedAt: epoch(ends.length > 0 ? Math.max(...ends) : placedAt),
  };
  return { placedAtEpoch: epoch(placedAt), firstLayerAtEpoch: epoch(firstLayerAt), blockWaitMs, handOverEpoch };
}

/** A stream's channel: its blocks come on `port` (routed from a fetch thread), else as messages through the caller. */
function openChannel(stream: number, header: KVHeader, port: MessagePort | undefined): BlockChannel {
  const channel = new BlockChannel(header);
  if (port) channel.listen(port);
  else streams.set(stream, channel);
  return channel;
}

/** Injects the call's objects, their blocks coming on ports from the fetch threads or as messages through the caller. */
async function performInject(call: Extract<Call, { op: 'inject' }>): Promise<CallValue> {
  const startedAt = performance.now();
  const channels = call.streams.map((s) => (s.header ? openChannel(s.stream, s.header, s.port) : undefined));
  try {
    return await inject(sessionOf(call.session), call, channels, startedAt);
  } finally {
    for (const s of call.streams) {
      streams.delete(s.stream);
      awaited.delete(s.stream);
    }
    for (const c of channels) c?.close();
  }
}

/** Generates, posting each token as it comes; the caller aborts through a flag in shared memory. */
async function performGenerate(id: number, call: Extract<Call, { op: 'generate' }>): Promise<CallValue> {
  const abort = new AbortController();
  const aborted = (): boolean => {
    if (Atomics.load(call.abort, 0) !== 0) abort.abort();
    return abort.signal.aborted;
  };
  aborted();
  // A batching engine yields between steps, and a sequence may wait for room in its KV budget before its first
  // token: the flag is read on a timer too, so an abort reaches a waiting sequence.
  const poll = setInterval(aborted, ABORT_POLL_MS);
  try {
    const result = await sessionOf(call.session).generate({ ...call.options, signal: abort.signal }, (token) => {
      post({ type: 'token', id, token });
      // Generation does not yield to this thread's messages between tokens, so the abort flag is shared memory.
      aborted();
    });
    return { op: 'generate', result };
  } finally {
    clearInterval(poll);
  }
}

async function perform(engine: Engine, id: number, call: Call): Promise<{ value: CallValue; transfer?: ArrayBuffer[] }> {
  switch (call.op) {
    case 'prefill': {
      // Logits are copied, not transferred: the session keeps the last ones to sample from.
      const logits = await sessionOf(call.session).prefill(call.tokens, { logits: call.logits });
      return { value: { op: 'prefill', logits } };
    }
    case 'exportKV': {
      // Exported KV is a read-back the session does not keep, so it moves by transfer.
      const tensors = await sessionOf(call.session).exportKV({ start: call.start, end: call.end });
      return { value: { op: 'exportKV', tensors }, transfer: transferable(tensorArrays(tensors)) };
    }
    case 'inject':
      return { value: await performInject(call) };
    case 'generate':
      return { value: await performGenerate(id, call) };
    case 'reserve':
      await sessionOf(call.session).reserve(call.tokens);
      return { value: { op: 'reserve' } };
    case 'useTransformTable':
      await engine.useTransformTable(call.bytes);
      return { value: { op: 'useTransformTable' } };
    case 'resident':
      return { value: { op: 'resident', resident: await sessionOf(call.session).residentChunks(call.keys) } };
    case 'injectResident':
      return { value: { op: 'injectResident', injected: await sessionOf(call.session).injectResident(call.key, call.position) } };
    case 'keepResident':
      await sessionOf(call.session).keepResident(call.key, { start: call.start, end: call.end });
      return { value: { op: 'keepResident' } };
    case 'work':
      return { value: { op: 'work', work: await engine.work() } };
    case 'dispose':
      for (const session of sessions.values()) session.dispose();
      sessions.clear();
      await engine.dispose();
      return { value: { op: 'dispose' } };
  }
}

function lengthAfter(call: Call): { length?: number } {
  const session = 'session' in call ? sessions.get(call.session) : undefined;
  return session ? { length: session.length } : {};
}

function handle(engine: Engine, message: ToEngine): void {
  switch (message.type) {
    case 'call': {
      const { type: _type, id, ...call } = message;
      perform(engine, id, call as Call).then(
        ({ value, transfer }) => post({ type: 'result', id, value, ...lengthAfter(call as Call) }, transfer),
        (err: unknown) => post({ type: 'error', id, error: toWireError(err), ...lengthAfter(call as Call) }),
      );
      return;
    }
    // The proxy checks what these could fail on; should one fail anyway, the session's next call reports it.
    case 'createSession':
      quietly(() => sessions.set(message.session, engine.createSession({ capacity: message.capacity })));
      return;
    case 'truncate':
      quietly(() => sessions.get(message.session)?.truncate(message.length));
      return;
    case 'disposeSession':
      quietly(() => sessions.get(message.session)?.dispose());
      sessions.delete(message.session);
      return;
    case 'block':
      streams.get(message.stream)?.push(message);
      return;
    case 'end':
      streams.get(message.stream)?.end();
      return;
    case 'open': {
      // A header after its call ended (the call failed meanwhile) opens nothing.
      const waiting = awaited.get(message.stream);
      awaited.delete(message.stream);
      if (waiting) waiting.open(openChannel(message.stream, message.header, message.port));
      else message.port?.close();
      return;
    }
    case 'fail':
      awaited.get(message.stream)?.reject(fromWireError(message.error));
      awaited.delete(message.stream);
      streams.get(message.stream)?.fail(fromWireError(message.error));
      return;
  }
}

async function opened(opener: EngineOpener): Promise<Engine> {
  const module = (await import(opener.module)) as { openEngine(args: unknown): Promise<Engine> };
  return module.openEngine(opener.args);
}

function quietly(fn: () => unknown): void {
  try {
    fn();
  } catch {
    // see handle()
  }
}

try {
  const options = workerData as EngineWorkerData;
  const engine = 'module' in options ? await opened(options) : await createEngine(options);
  port.on('message', (message: ToEngine) => handle(engine, message));
  post({ type: 'ready', ready: { info: engine.info, backend: engine.backend, device: engine.device, maxCapacity: options.capacity } });
} catch (err) {
  post({ type: 'startFailed', error: toWireError(err) });
}
