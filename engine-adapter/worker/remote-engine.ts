/**
 * The control plane's side of an engine running on its own thread (engine-worker.ts): an Engine whose sessions are
 * proxies, so code written against engine-adapter/types.ts runs unchanged while the model's compute, the KV cache and
 * the GPU device live on the worker. The tokenizer is loaded here too, for the short texts of queries; layer blocks
 * of injected objects go to the worker by transfer as they arrive, without a copy, and those of a fetch pool's
 * objects straight from the fetch thread (routed-stream.ts).
 */
import { MessageChannel, SHARE_ENV, Worker, type TransferListItem } from 'node:worker_threads';
import { fromWireError, KdnError, toWireError } from '../../common/errors.ts';
import type { TransformTable } from '../../storage/kv-object/codecs/transform-table.ts';
import type { KVBlockReader, KVTensors } from '../../storage/kv-object/types.ts';
import type { CreateEngineOptions } from '../create-engine.ts';
import type { EngineWork } from '../engine-work.ts';
import { loadModelConfig } from '../model/load-config.ts';
import { loadTokenizer } from '../model/tokenizer.ts';
import {
  isAwaited,
  type BackendName,
  type BlendChunk,
  type BlendedPrefill,
  type BlendOptions,
  type Engine,
  type GeneratedToken,
  type GenerateOptions,
  type GenerateResult,
  type InjectedObject,
  type InjectedPrefill,
  type ModelInfo,
  type PrefillOptions,
  type ResidentKey,
  type Session,
  type Tokenizer,
} from '../types.ts';
import {
  transferable,
  type Call,
  type CallValue,
  type EngineOpener,
  type EngineWorkerData,
  type FromEngine,
  type Ready,
  type StreamOpen,
  type ToEngine,
} from './protocol.ts';
import { isRoutable } from './routed-stream.ts';

const ENTRY = new URL('./engine-worker.js', import.meta.url);
/** How long dispose() lets the engine thread release its sessions and device before terminating it. */
const DISPOSE_GRACE_MS = 5_000;

interface Pending {
  resolve: (value: CallValue) => void;
  reject: (err: KdnError) => void;
  /** The session whose length the answer updates. */
  session?: RemoteSession;
  onToken?: (token: GeneratedToken) => void;
}

/** Starts the engine on a worker thread; resolves once the model is loaded there. */
export async function createEngineInWorker(options: CreateEngineOptions): Promise<Engine> {
  const config = await loadModelConfig(options.modelDir);
  const capacity = options.capacity ?? Math.min(config.maxPositionEmbeddings, 8192);
  const tokenizer = await loadTokenizer(options.modelDir, config);
  return startEngineThread({ ...options, capacity }, tokenizer);
}

/** Starts an engine `opener` builds on a worker thread; `tokenizer` is the proxy's, for this thread's texts. */
export function createOpenedEngineInWorker(opener: EngineOpener, tokenizer: Tokenizer): Promise<Engine> {
  return startEngineThread(opener, tokenizer);
}

async function startEngineThread(workerData: EngineWorkerData, tokenizer: Tokenizer): Promise<Engine> {
  // The real environment, not a copy: the WebGPU backend picks its Vulkan driver through environment variables.
  const worker = new Worker(ENTRY, { workerData, env: SHARE_ENV });
  const listeners: { message?: (m: FromEngine) => void; error?: (err: Error) => void; exit?: (code: number) => void } = {};
  const ready = await new Promise<Ready>((resolve, reject) => {
    listeners.message = (message) => {
      if (message.type === 'ready') resolve(message.ready);
      else if (message.type === 'startFailed') reject(fromWireError(message.error));
    };
    listeners.error = (err) =>
      reject(new KdnError('ENGINE_UNAVAILABLE', `the engine thread failed to start: ${err.message}`, { cause: err }));
    listeners.exit = (code) => reject(new KdnError('ENGINE_UNAVAILABLE', `the engine thread exited with code ${code} while starting`));
    worker.on('message', listeners.message).once('error', listeners.error).once('exit', listeners.exit);
  }).catch(async (err: unknown) => {
    await worker.terminate();
    throw err;
  });
  worker.off('message', listeners.message!).off('error', listeners.error!).off('exit', listeners.exit!);
  return new RemoteEngine(worker, ready, tokenizer);
}

class RemoteEngine implements Engine {
  readonly info: ModelInfo;
  readonly backend: BackendName;
  readonly device: string;
  private readonly pending = new Map<number, Pending>();
  private readonly sessions = new Set<RemoteSession>();
  private nextId = 1;
  private nextSession = 1;
  private nextStream = 1;
  private dead: KdnError | undefined;
  private disposing: Promise<void> | undefined;
  /** Tables the engine thread holds (or is being sent), by hash: each crosses the thread boundary once. */
  private readonly tables = new Map<string, Promise<void>>();

  constructor(
    private readonly worker: Worker,
    private readonly ready: Ready,
    readonly tokenizer: Tokenizer,
  ) {
    this.info = ready.info;
    this.backend = ready.backend;
    this.device = ready.device;
    worker.on('message', (message: FromEngine) => this.receive(message));
    worker.on('error', (err) => this.die(`the engine thread failed: ${err.message}`));
    worker.on('exit', (code) => this.die(`the engine thread exited with code ${code}`));
    // Idle, the engine thread does not keep the process alive; calls in flight do (see call()).
    worker.unref();
  }

  createSession(options: { capacity?: number } = {}): Session {
    const capacity = options.capacity ?? this.ready.maxCapacity;
    if (capacity > this.ready.maxCapacity) {
      throw new KdnError('CONTEXT_TOO_LONG', `session capacity ${capacity} exceeds the engine's ${this.ready.maxCapacity} tokens`, {
        hint: 'create the engine with a larger capacity',
      });
    }
    const session = new RemoteSession(this, this.nextSession++, capacity);
    this.sessions.add(session);
    this.post({ type: 'createSession', session: session.id, capacity });
    return session;
  }

  useTransformTable(table: TransformTable | Uint8Array): Promise<void> {
    // Bytes are copied (the caller keeps them): a table is sent once per engine, not per object.
    if (table instanceof Uint8Array) return this.call({ op: 'useTransformTable', bytes: table }).then(() => undefined);
    let sent = this.tables.get(table.hash);
    if (sent === undefined) {
      sent = this.call({ op: 'useTransformTable', bytes: table.bytes }).then(() => undefined);
      this.tables.set(table.hash, sent);
      sent.catch(() => this.tables.delete(table.hash));
    }
    return sent;
  }

  async work(): Promise<EngineWork> {
    return ((await this.call({ op: 'work' })) as Extract<CallValue, { op: 'work' }>).work;
  }

  dispose(): Promise<void> {
    this.disposing ??= (async () => {
      for (const session of this.sessions) session.dispose();
      // A forward still running on the thread is not waited out for long: terminating the thread ends it.
      if (!this.dead)
        await within(
          this.call({ op: 'dispose' }).catch(() => undefined),
          DISPOSE_GRACE_MS,
        );
      // Calls still in flight (a forward that outlasted the grace) fail now rather than never.
      this.die('the engine was disposed');
      await this.worker.terminate();
    })();
    return this.disposing;
  }

  /** Sends a call and resolves with its answer; `session` gets the length the answer carries. */
  call(
    call: Call,
    extra: { session?: RemoteSession; onToken?: (token: GeneratedToken) => void; transfer?: TransferListItem[] } = {},
  ): Promise<CallValue> {
    if (this.dead) return Promise.reject(this.dead);
    const id = this.nextId++;
    return new Promise<CallValue>((resolve, reject) => {
      this.pending.set(id, {
        resolve,
        reject,
        ...(extra.session ? { session: extra.session } : {}),
        ...(extra.onToken ? { onToken: extra.onToken } : {}),
      });
      if (this.pending.size === 1) this.worker.ref();
      this.post({ type: 'call', id, ...call } as ToEngine, extra.transfer);
    });
  }

  post(message: ToEngine, transfer: TransferListItem[] = []): void {
    if (!this.dead) this.worker.postMessage(message, transfer);
  }

  /** Why calls fail now (disposed, or the thread died), or undefined while the engine runs. */
  get unavailable(): KdnError | undefined {
    return this.dead ?? (this.disposing ? new KdnError('ENGINE_UNAVAILABLE', 'the engine is being disposed') : undefined);
  }

  stream(): number {
    return this.nextStream++;
  }

  forget(session: RemoteSession): void {
    this.sessions.delete(session);
  }

  private receive(message: FromEngine): void {
    if (message.type === 'ready' || message.type === 'startFailed') return;
    const pending = this.pending.get(message.id);
    if (!pending) return;
    if (message.type === 'token') {
      pending.onToken?.(message.token);
      return;
    }
    this.pending.delete(message.id);
    if (this.pending.size === 0) this.worker.unref();
    if (message.length !== undefined) pending.session?.setLength(message.length);
    if (message.type === 'result') pending.resolve(message.value);
    else pending.reject(fromWireError(message.error));
  }

  private die(reason: string): void {
    if (this.dead) return;
    this.dead = new KdnError('ENGINE_UNAVAILABLE', reason, { hint: 'restart kdn; the engine thread is gone' });
    for (const pending of this.pending.values()) pending.reject(this.dead);
    this.pending.clear();
  }
}

/** A Session on the engine thread. `length` mirrors the worker's after every answer. */
class RemoteSession implements Session {
  private held = 0;
  private disposed = false;

  constructor(
    private readonly engine: RemoteEngine,
    readonly id: number,
    readonly capacity: number,
  ) {}

  get length(): number {
    return this.held;
  }

  setLength(length: number): void {
    this.held = length;
  }

  async prefill(tokens: ArrayLike<number>, options: PrefillOptions = {}): Promise<Float32Array> {
    const ids = Uint32Array.from(tokens);
    const value = await this.call({ op: 'prefill', session: this.id, tokens: ids, logits: options.logits ?? 'last' }, [ids.buffer]);
    return (value as Extract<CallValue, { op: 'prefill' }>).logits;
  }

  async exportKV(range: { start: number; end: number }): Promise<KVTensors> {
    const value = await this.call({ op: 'exportKV', session: this.id, start: range.start, end: range.end });
    return (value as Extract<CallValue, { op: 'exportKV' }>).tensors;
  }

  async injectKV(object: KVBlockReader, position: number): Promise<void> {
    await this.inject([object], position);
  }

  async injectKVAndPrefill(
    objects: readonly InjectedObject[],
    tokens: ArrayLike<number>,
    options: PrefillOptions = {},
  ): Promise<InjectedPrefill> {
    const value = (await this.inject(objects, this.held, Uint32Array.from(tokens), options)) as Extract<CallValue, { op: 'inject' }>;
    return { logits: value.logits!, ...localTimes(value) };
  }

  async blendKVAndPrefill(chunks: readonly BlendChunk[], tokens: ArrayLike<number>, blend: BlendOptions): Promise<BlendedPrefill> {
    const tokenIds = chunks.map((c) => Uint32Array.from(c.tokenIds));
    const objects = chunks.map((c) => c.object);
    const value = (await this.inject(objects, this.held, Uint32Array.from(tokens), {}, { options: blend, tokenIds })) as Extract<
      CallValue,
      { op: 'inject' }
    >;
    return { logits: value.logits!, ...localTimes(value), ...value.blended! };
  }

  async generate(options: GenerateOptions, onToken?: (token: GeneratedToken) => void): Promise<GenerateResult> {
    const { signal, ...rest } = options;
    const abort = new Int32Array(new SharedArrayBuffer(4));
    const onAbort = (): void => void Atomics.store(abort, 0, 1);
    if (signal?.aborted) onAbort();
    signal?.addEventListener('abort', onAbort, { once: true });
    try {
      const value = await this.engine.call(
        { op: 'generate', session: this.id, options: rest, abort },
        { session: this, ...(onToken ? { onToken } : {}) },
      );
      return (value as Extract<CallValue, { op: 'generate' }>).result;
    } finally {
      signal?.removeEventListener('abort', onAbort);
    }
  }

  truncate(length: number): void {
    this.checkUsable();
    if (!Number.isInteger(length) || length < 0 || length > this.held) {
      throw new KdnError('INVALID_ARGUMENT', `cannot truncate a ${this.held}-token session to ${length}`);
    }
    this.held = length;
    this.engine.post({ type: 'truncate', session: this.id, length });
  }

  async reserve(tokens: number): Promise<void> {
    await this.call({ op: 'reserve', session: this.id, tokens });
  }

  async residentChunks(keys: readonly ResidentKey[]): Promise<boolean[]> {
    const value = await this.call({ op: 'resident', session: this.id, keys: [...keys] });
    return (value as Extract<CallValue, { op: 'resident' }>).resident;
  }

  async injectResident(key: ResidentKey, position: number): Promise<boolean> {
    const value = await this.call({ op: 'injectResident', session: this.id, key, position });
    return (value as Extract<CallValue, { op: 'injectResident' }>).injected;
  }

  async keepResident(key: ResidentKey, range: { start: number; end: number }): Promise<void> {
    await this.call({ op: 'keepResident', session: this.id, key, start: range.start, end: range.end });
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    this.engine.forget(this);
    this.engine.post({ type: 'disposeSession', session: this.id });
  }

  private call(call: Call, transfer?: ArrayBuffer[]): Promise<CallValue> {
    this.checkUsable();
    return this.engine.call(call, { session: this, ...(transfer ? { transfer } : {}) });
  }

  /**
   * Sends the objects' headers with the call, then each object's layer blocks as its reader yields them, until the
   * call is answered (after a failed injection the rest of a stream is not sent).
   */
  private async inject(
    objects: readonly InjectedObject[],
    position: number,
    tokens?: Uint32Array,
    prefill: PrefillOptions = {},
    blend?: { options: BlendOptions; tokenIds: Uint32Array[] },
  ): Promise<CallValue> {
    this.checkUsable();
    const streams = objects.map(
      (object): StreamOpen => (isAwaited(object) ? { stream: this.engine.stream(), tokens: object.tokens } : this.open(object)),
    );
    const call: Call = {
      op: 'inject',
      session: this.id,
      position,
      streams,
      ...(tokens ? { tokens, logits: prefill.logits ?? 'last', ...(prefill.timeline ? { timeline: true } : {}) } : {}),
      ...(blend ? { blend } : {}),
    };
    let answered = false;
    const transfer = [
      ...(tokens ? [tokens.buffer as ArrayBuffer] : []),
      ...(blend ? blend.tokenIds.map((t) => t.buffer as ArrayBuffer) : []),
      ...streams.flatMap((s) => (s.port ? [s.port] : [])),
    ];
    const answer = this.engine.call(call, { session: this, ...(transfer.length > 0 ? { transfer } : {}) });
    for (const [i, object] of objects.entries()) {
      const { stream, port } = streams[i]!;
      if (isAwaited(object)) void this.openLater(object.reader, stream, () => answered);
      else if (!port) void this.pump(object, stream, () => answered);
    }
    try {
      return await answer;
    } finally {
      answered = true;
    }
  }

  /**
   * A stream for `object`: routed (its blocks go from the thread that fetched them to the engine's over a port of
   * their own, never through this event loop) when the reader can be, else pumped from here.
   */
  private open(object: KVBlockReader, id: number = this.engine.stream()): StreamOpen {
    const stream = { stream: id, header: object.header };
    if (!isRoutable(object)) return stream;
    const { port1, port2 } = new MessageChannel();
    if (object.route(port2)) return { ...stream, port: port1 };
    port1.close();
    return stream;
  }

  /**
   * Opens stream `stream` on the engine's thread once `reader` comes (an object whose header was still on its way
   * when the call went): routed there if it can be, else pumped from here. A reader that fails fails the stream.
   */
  private async openLater(reader: Promise<KVBlockReader>, stream: number, stop: () => boolean): Promise<void> {
    let object: KVBlockReader;
    try {
      object = await reader;
    } catch (err) {
      this.engine.post({ type: 'fail', stream, error: toWireError(err) });
      return;
    }
    if (stop()) return;
    const opened = this.open(object, stream);
    this.engine.post(
      { type: 'open', stream, header: object.header, ...(opened.port ? { port: opened.port } : {}) },
      opened.port ? [opened.port] : [],
    );
    if (!opened.port) await this.pump(object, stream, stop);
  }

  private async pump(object: KVBlockReader, stream: number, stop: () => boolean): Promise<void> {
    try {
      for await (const block of object.layers) {
        if (stop()) return;
        if (block.encoded === undefined) {
          this.engine.post({ type: 'block', stream, layer: block.layer, source: block.source });
          continue;
        }
        const bytes = owned(block.encoded);
        this.engine.post({ type: 'block', stream, layer: block.layer, bytes, source: block.source }, transferable([bytes]));
      }
      this.engine.post({ type: 'end', stream });
    } catch (err) {
      this.engine.post({ type: 'fail', stream, error: toWireError(err) });
    }
  }

  private checkUsable(): void {
    // Sessions end with their engine: then the engine's state is the reason, not the caller's use of the session.
    const gone = this.engine.unavailable;
    if (gone) throw gone;
    if (this.disposed) throw new KdnError('INVALID_ARGUMENT', 'session was disposed');
  }
}

/** An inject answer's times on this thread's clock, with the timeline the worker kept (its times are its own). */
function localTimes(value: Extract<CallValue, { op: 'inject' }>): Omit<InjectedPrefill, 'logits'> {
  const local = (epoch: number): number => epoch - performance.timeOrigin;
  const placed = {
    placedAt: local(value.placedAtEpoch!),
    firstLayerAt: local(value.firstLayerAtEpoch!),
    blockWaitMs: value.blockWaitMs!,
    ...(value.timeline ? { timeline: value.timeline } : {}),
  };
  const h = value.handOverEpoch;
  if (h === undefined) return placed;
  return { ...placed, handOver: { startedAt: local(h.startedAt), firstBlockAt: local(h.firstBlockAt), receivedAt: local(h.receivedAt) } };
}

/** Waits for `promise`, but at most `ms`. */
async function within(promise: Promise<unknown>, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([promise, new Promise<void>((resolve) => (timer = setTimeout(resolve, ms)))]);
  clearTimeout(timer);
}

/** The block itself when it spans its whole buffer (then it moves by transfer), else a copy that does. */
function owned(bytes: Uint8Array): Uint8Array {
  return bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength && bytes.buffer instanceof ArrayBuffer
    ? bytes
    : new Uint8Array(bytes);
}
