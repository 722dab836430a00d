import { KdnError } from '../common/errors.ts';
import type { KVBlock, KVHeader, KVBlockReader, KVTensors } from '../storage/kv-object/types.ts';
import { tokenHash } from '../storage/kv-object/index.ts';
import type { ForwardBackend, KVCacheHandle } from './backend.ts';
import { blendPlan } from './blend-selection.ts';
import type { DecodeScheduler } from './decode-batcher.ts';
import { HotTier } from './hot-tier.ts';
import { gateBatch, LayerGates, type LayerGate } from './layer-gates.ts';
import { PlacingTimeline, type PlacingTimelineReport } from './placing-timeline.ts';
import { writeInLayerOrder, type LayerSink } from './layer-order.ts';
import type { ModelConfig } from './model/config.ts';
import { TextStream } from './model/text-stream.ts';
import { Sampler } from './sampling.ts';
import {
  isAwaited,
  type BlendChunk,
  type BlendedPrefill,
  type BlendOptions,
  type GeneratedToken,
  type GenerateOptions,
  type GenerateResult,
  type InjectedObject,
  type InjectedPrefill,
  type PrefillOptions,
  type ResidentKey,
  type Session,
  type Tokenizer,
} from './types.ts';

/** Marks positions whose token id is unknown because their KV was injected. */
const INJECTED = -1;

export interface SessionModel {
  config: ModelConfig;
  fingerprint: string;
  tokenizer: Tokenizer;
}

/** A KV object's stream yields its layers in order. */
function checkLayerOrder(layer: number, expected: number): void {
  if (layer !== expected) throw new KdnError('KV_CORRUPT', `KV stream yielded layer ${layer} where layer ${expected} was due`);
}

/** A KV object's stream ended after all of its header's layers, every one verified (storage LayerVerification). */
function checkLayerCount(object: KVBlockReader, yielded: number): void {
  const layers = object.header.layers;
  if (yielded !== layers) throw new KdnError('KV_CORRUPT', `KV stream ended after ${yielded} of ${layers} layers`);
  const verified = object.verification?.through ?? layers;
  if (verified < layers) throw new KdnError('KV_CORRUPT', `KV stream ended with ${verified} of its ${layers} layers verified`);
}

/**
 * The layers of a reader still to come: the first read waits for `open` (and fails as it does); stopped before that,
 * the stream ends without reading it.
 */
function awaitedLayers(open: () => Promise<AsyncIterator<KVBlock>>): AsyncIterator<KVBlock> {
  let inner: AsyncIterator<KVBlock> | undefined;
  let stopped = false;
  return {
    async next() {
      inner ??= await open();
      if (stopped) {
        await inner.return?.();
        return { done: true, value: undefined };
      }
      return inner.next();
    },
    async return() {
      stopped = true;
      await inner?.return?.();
      return { done: true, value: undefined };
    },
  };
}

/**
 * Holds generated text back while it could still turn into a stop string, so streamed text never has to be
 * taken back.
 */
class StopStringFilter {
  private released = 0;

  constructor(private readonly stops: string[]) {}

  /** Given all text so far: what may be released now, and whether a stop string completed (text cut before it). */
  next(text: string): { release: string; stopped: boolean } {
    let cut = -1;
    for (const s of this.stops) {
      const at = text.indexOf(s, Math.max(0, this.released - s.length + 1));
      if (at !== -1 && (cut === -1 || at < cut)) cut = at;
    }
    if (cut !== -1) return { release: this.take(text, cut), stopped: true };
    let safe = text.length;
    for (const s of this.stops) {
      for (let k = Math.min(s.length - 1, text.length); k > 0; k--) {
        if (text.endsWith(s.slice(0, k))) {
          safe = Math.min(safe, text.length - k);
          break;
        }
      }
    }
    return { release: this.take(text, safe), stopped: false };
  }

  /** Like next, but releases everything after a stop string check: no more text is coming. */
  finish(text: string): { release: string; stopped: boolean } {
    const { release, stopped } = this.next(text);
    return stopped ? { release, stopped } : { release: release + this.take(text, text.length), stopped };
  }

  private take(text: string, end: number): string {
    const out = end > this.released ? text.slice(this.released, end) : '';
    this.released = Math.max(this.released, end);
    return out;
  }
}

/**
 * The session logic shared by every backend: positions, capacity, KV export and injection, sampling and stop
 * handling. Calls on one session must not overlap; an overlapping call is CONFLICT rather than a corrupted cache.
 */
export class BackendSession implements Session {
  readonly capacity: number;
  private readonly cache: KVCacheHandle;
  /** Token id at each position (INJECTED where only the KV is known). */
  private readonly ids: number[] = [];
  /** Logits of the last position, when the last call produced them. */
  private lastLogits: Float32Array | undefined;
  /** Where injected rows the device has not yet confirmed begin (see injectKV); undefined when none are pending. */
  private unsettledFrom: number | undefined;
  private busy = false;
  private disposed = false;

  constructor(
    private readonly backend: ForwardBackend,
    private readonly model: SessionModel,
    capacity: number,
    /** The engine's, shared by its sessions; the default keeps nothing. */
    private readonly hot: HotTier = new HotTier(0, model.fingerprint),
    /** With one, generation and last-logits prefills run in batched steps with the engine's other sessions. */
    private readonly decoder?: DecodeScheduler,
  ) {
    const max = model.config.maxPositionEmbeddings;
    if (!Number.isInteger(capacity) || capacity < 1 || capacity > max) {
      throw new KdnError('INVALID_ARGUMENT', `session capacity ${capacity} must be an integer in [1, ${max}]`, {
        hint: 'the model was trained for max_position_embeddings tokens',
      });
    }
    this.capacity = capacity;
    this.cache = backend.createKVCache(capacity);
  }

  get length(): number {
    return this.ids.length;
  }

  prefill(tokens: ArrayLike<number>, options: PrefillOptions = {}): Promise<Float32Array> {
    return this.exclusive(() => this.prefillNow(tokens, options.logits ?? 'last'));
  }

  exportKV(range: { start: number; end: number }): Promise<KVTensors> {
    return this.exclusive(async () => {
      const { start, end } = range;
      if (!Number.isInteger(start) || !Number.isInteger(end) || start < 0 || end <= start || end > this.length) {
        throw new KdnError('INVALID_ARGUMENT', `KV range [${start}, ${end}) is not within the session's ${this.length} tokens`);
      }
      await this.settleInjected();
      return this.backend.readKV(this.cache, start, end);
    });
  }

  injectKV(object: KVBlockReader, position: number): Promise<void> {
    return this.exclusive(async () => {
      const h = object.header;
      this.checkObject(h);
      if (position !== this.length) {
        throw new KdnError(
          'INVALID_ARGUMENT',
          `KV can only be injected at the end of the session (position ${this.length}), not at ${position}`,
        );
      }
      this.checkRoom(h.tokens);
      // Layers are written as they arrive so the transfer overlaps the upload; the length only moves once all
      // arrived, so a failure midway leaves the session as it was (the partial rows sit beyond its length).
      let expected = 0;
      for await (const block of object.layers) {
        checkLayerOrder(block.layer, expected);
        await this.backend.writeKVLayer(this.cache, h, block, position);
        expected++;
      }
      checkLayerCount(object, expected);
      // Not settled here: a device round trip per chunk would stall the upload pipeline between chunks. The rows are
      // confirmed by the next call that reads the cache, which rolls them back if the device rejected them.
      this.unsettledFrom ??= position;
      for (let i = 0; i < h.tokens; i++) this.ids.push(INJECTED);
      this.lastLogits = undefined;
    });
  }

  residentChunks(keys: readonly ResidentKey[]): Promise<boolean[]> {
    return this.exclusive(async () => keys.map((k) => this.hot.has(k)));
  }

  injectResident(key: ResidentKey, position: number): Promise<boolean> {
    return this.exclusive(async () => {
      if (position !== this.length) {
        const at = `the end of the session (position ${this.length})`;
        throw new KdnError('INVALID_ARGUMENT', `KV can only be injected at ${at}, not at ${position}`);
      }
      const rows = this.hot.use(key);
      if (rows === undefined) return false;
      this.checkRoom(rows.tokens);
      await this.backend.loadKVRows(this.cache, rows, position);
      this.unsettledFrom ??= position;
      for (let i = 0; i < rows.tokens; i++) this.ids.push(INJECTED);
      this.lastLogits = undefined;
      return true;
    });
  }

  keepResident(key: ResidentKey, range: { start: number; end: number }): Promise<void> {
    return this.exclusive(async () => {
      const { start, end } = range;
      if (!Number.isInteger(start) || !Number.isInteger(end) || start < 0 || end <= start || end > this.length) {
        throw new KdnError('INVALID_ARGUMENT', `KV range [${start}, ${end}) is not within the session's ${this.length} tokens`);
      }
      if (this.hot.capacityBytes === 0) return;
      // Only rows the device confirmed are kept: a rejected injection must not leave an entry behind.
      await this.settleInjected();
      this.hot.keep(key, await this.backend.saveKVRows(this.cache, start, end));
    });
  }

  injectKVAndPrefill(
    objects: readonly InjectedObject[],
    tokens: ArrayLike<number>,
    options: PrefillOptions = {},
  ): Promise<InjectedPrefill> {
    return this.exclusive(async () => {
      const logits = options.logits ?? 'last';
      const ids = this.tokenIds(tokens);
      const {
        result: out,
        end,
        ...times
      } = await this.placeWhileRunning(
        objects,
        ids.length,
        (end, gate) => this.forwardOverContext(ids, end, logits, gate),
        options.timeline === true,
      );
      for (let i = this.length; i < end; i++) this.ids.push(INJECTED);
      for (const id of ids) this.ids.push(id);
      this.lastLogits = logits === 'last' ? out : logits === 'all' ? out.slice((ids.length - 1) * this.model.config.vocabSize) : undefined;
      return { logits: out, ...times };
    });
  }

  blendKVAndPrefill(chunks: readonly BlendChunk[], tokens: ArrayLike<number>, blend: BlendOptions): Promise<BlendedPrefill> {
    return this.exclusive(async () => {
      const prompt = this.tokenIds(tokens);
      const start = this.length;
      const chunkStarts: number[] = [];
      const contextIds: number[] = [];
      for (const chunk of chunks) {
        chunkStarts.push(contextIds.length);
        for (const id of this.chunkTokenIds(chunk)) contextIds.push(id);
      }
      const layout = { chunkStarts, contextRows: contextIds.length, promptRows: prompt.length };
      const plan = blendPlan(blend.selection, blend.ratio, layout, this.model.config.layers);
      const all = new Uint32Array(contextIds.length + prompt.length);
      all.set(contextIds);
      all.set(prompt, contextIds.length);
      const objects = chunks.map((c) => c.object);
      const {
        result,
        end: _end,
        ...times
      } = await this.placeWhileRunning(
        objects,
        prompt.length,
        (_end, gate) => this.backend.blendForward(this.cache, all, start, plan, 'last', gate),
        blend.timeline === true,
      );
      for (const id of all) this.ids.push(id);
      this.lastLogits = result.logits;
      return {
        logits: result.logits,
        ...times,
        recomputed: Math.round(result.meanRows - prompt.length),
        fullLayers: plan.checkLayer ?? 0,
      };
    });
  }

  generate(options: GenerateOptions, onToken?: (token: GeneratedToken) => void): Promise<GenerateResult> {
    return this.exclusive(async () => {
      // Bad options are refused by generateNow before anything is reserved for them.
      if (!this.decoder || !Number.isInteger(options.maxTokens) || options.maxTokens < 1) return this.generateNow(options, onToken);
      // The sequence's whole KV footprint, held while it decodes with the others.
      const started = performance.now();
      const release = await this.decoder.admit(Math.min(this.capacity, this.length + options.maxTokens), options.signal);
      if (release === null) return { tokens: [], text: '', finishReason: 'aborted', firstTokenMs: 0, totalMs: performance.now() - started };
      try {
        return await this.generateNow(options, onToken);
      } finally {
        release();
      }
    });
  }

  reserve(tokens: number): Promise<void> {
    return this.exclusive(async () => {
      if (!Number.isInteger(tokens) || tokens < 0 || tokens > this.capacity) {
        throw new KdnError('INVALID_ARGUMENT', `cannot reserve ${tokens} tokens in a session of capacity ${this.capacity}`);
      }
      if (tokens > 0) await this.backend.reserveKV(this.cache, tokens);
    });
  }

  truncate(length: number): void {
    this.checkUsable();
    if (this.busy) throw new KdnError('CONFLICT', 'session is busy with another call');
    if (!Number.isInteger(length) || length < 0 || length > this.length) {
      throw new KdnError('INVALID_ARGUMENT', `cannot truncate a ${this.length}-token session to ${length}`);
    }
    if (length === this.length) return;
    this.ids.length = length;
    this.lastLogits = undefined;
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    this.cache.dispose();
  }

  private async exclusive<T>(fn: () => Promise<T>): Promise<T> {
    this.checkUsable();
    if (this.busy) throw new KdnError('CONFLICT', 'session is busy with another call', { hint: 'await each session call before the next' });
    this.busy = true;
    try {
      return await fn();
    } finally {
      this.busy = false;
    }
  }

  private checkUsable(): void {
    if (this.disposed) throw new KdnError('INVALID_ARGUMENT', 'session was disposed');
  }

  private checkRoom(tokens: number): void {
    if (this.length + tokens > this.capacity) {
      throw new KdnError('CONTEXT_TOO_LONG', `${this.length} + ${tokens} tokens exceed the session capacity of ${this.capacity}`, {
        hint: 'use a shorter prompt or fewer chunks, or create the session with a larger capacity',
      });
    }
  }

  /** The rows `o` takes: its header's tokens once checked, or an awaited object's announced count. */
  private checkedTokens(o: InjectedObject): number {
    if (!isAwaited(o)) {
      this.checkObject(o.header);
      return o.header.tokens;
    }
    if (!Number.isInteger(o.tokens) || o.tokens < 1) {
      throw new KdnError('INVALID_ARGUMENT', `an awaited KV object must announce a positive whole token count, not ${o.tokens}`);
    }
    return o.tokens;
  }

  /** An awaited object's reader, checked as a reader in hand is, and against the token count it was placed by. */
  private checkedReader(reader: KVBlockReader, tokens: number): KVBlockReader {
    this.checkObject(reader.header);
    if (reader.header.tokens !== tokens) {
      throw new KdnError('KV_MISMATCH', `a KV object of ${reader.header.tokens} tokens came where ${tokens} were announced`, {
        hint: 'announce the token count of the chunk the object was computed from',
      });
    }
    return reader;
  }

  /** A KV object's header against this model: fingerprint, shape and a token count. */
  private checkObject(h: KVHeader): void {
    const c = this.model.config;
    if (h.modelFingerprint !== this.model.fingerprint) {
      throw new KdnError(
        'KV_MISMATCH',
        `KV object was computed by model ${h.modelFingerprint}, this engine runs ${this.model.fingerprint}`,
        {
          hint: 'recompute the chunk with this model',
        },
      );
    }
    if (h.layers !== c.layers || h.kvHeads !== c.kvHeads || h.headDim !== c.headDim) {
      throw new KdnError(
        'KV_MISMATCH',
        `KV object shape ${h.layers}x${h.kvHeads}x${h.headDim} (layers x kvHeads x headDim) does not match the model's ${c.layers}x${c.kvHeads}x${c.headDim}`,
      );
    }
    if (!Number.isInteger(h.tokens) || h.tokens < 1) throw new KdnError('KV_CORRUPT', `KV object holds ${h.tokens} tokens`);
  }

  /** Prompt tokens checked against the vocabulary. */
  private tokenIds(tokens: ArrayLike<number>): Uint32Array {
    const n = tokens.length;
    if (n === 0) throw new KdnError('INVALID_ARGUMENT', 'prefill needs at least one token');
    const vocab = this.model.config.vocabSize;
    const ids = new Uint32Array(n);
    for (let i = 0; i < n; i++) {
      const id = tokens[i]!;
      if (!Number.isInteger(id) || id < 0 || id >= vocab)
        throw new KdnError('INVALID_ARGUMENT', `token id ${id} is outside the vocabulary [0, ${vocab})`);
      ids[i] = id;
    }
    return ids;
  }

  /**
   * Places `objects` at consecutive positions from `length` as their layers arrive while `run` computes over them
   * (it gets where the objects end and the gate of their layers), with room for `extraTokens` after them. Nothing
   * moves the length: a failure (a stream's, the device's, run's) leaves the session as it was. `timed`: the call
   * records when its parts happened (placing-timeline.ts) and returns the report.
   */
  private async placeWhileRunning<T>(
    objects: readonly InjectedObject[],
    extraTokens: number,
    run: (end: number, gate: LayerGate) => Promise<T>,
    timed: boolean,
  ): Promise<{ result: T; placedAt: number; firstLayerAt: number; blockWaitMs: number; end: number; timeline?: PlacingTimelineReport }> {
    const timeline = timed ? new PlacingTimeline() : undefined;
    const positions: number[] = [];
    let end = this.length;
    for (const o of objects) {
      // An awaited reader the call never gets to read (it failed first) must not reject unhandled.
      if (isAwaited(o)) o.reader.catch(() => undefined);
    }
    for (const o of objects) {
      positions.push(end);
      end += this.checkedTokens(o);
    }
    this.checkRoom(end - this.length + extraTokens);
    await this.settleInjected();
    await this.backend.reserveKV(this.cache, end + extraTokens);
    const layers = this.model.config.layers;
    const gates = new LayerGates(layers, () => this.backend.flushKVWrites(this.cache), gateBatch(layers), timeline);
    const gate: LayerGate = Object.assign((layer: number) => gates.wait(layer), { timeline });
    let placedAt = 0;
    let blockWaitMs = 0;
    let placeFailure: { error: unknown } | undefined;
    const placing = this.placeAsTheyArrive(objects, positions, gates).then(
      (waited) => {
        placedAt = performance.now();
        blockWaitMs = waited;
      },
      (error: unknown) => {
        placeFailure = { error };
        gates.fail(error);
      },
    );
    let result: T;
    try {
      result = await run(end, gate);
    } catch (err) {
      // A failed placing failed the run through its gate; a run failing on its own stops the placing.
      gates.fail(err);
      await placing;
      throw err;
    }
    timeline?.mark('logits');
    await placing;
    if (placeFailure) throw placeFailure.error;
    await this.backend.settleKVWrites(this.cache);
    const firstLayerAt = gates.firstLayerAt ?? placedAt;
    timeline?.mark('placed', placedAt);
    timeline?.mark('firstLayer', firstLayerAt);
    return { result, placedAt, firstLayerAt, blockWaitMs, end, ...(timeline ? { timeline: timeline.report() } : {}) };
  }

  /** A blend chunk's token ids, checked against its object's header (count and hash). */
  private chunkTokenIds(chunk: BlendChunk): Uint32Array {
    const h = chunk.object.header;
    const ids = Uint32Array.from(chunk.tokenIds);
    if (ids.length !== h.tokens || tokenHash(ids) !== h.tokenHash) {
      throw new KdnError('KV_MISMATCH', `a blend chunk's ${ids.length} token ids are not the ${h.tokens} its KV object was computed from`, {
        hint: 'pass the token ids the chunk was encoded with',
      });
    }
    return ids;
  }

  /**
   * Writes every object's layers as they arrive, all objects at once and the lowest layer first (layer-order.ts), and
   * reports to `gates` how many leading layers every object has written; resolves with how long it waited for blocks.
   * Stops at the first failure (or once the gates failed because the forward did) and throws it.
   */
  private async placeAsTheyArrive(objects: readonly InjectedObject[], positions: readonly number[], gates: LayerGates): Promise<number> {
    const layers = this.model.config.layers;
    const counts = new Array<number>(layers).fill(0);
    const written = new Array<number>(objects.length).fill(0);
    // Awaited objects' readers, once they came: a block of an object means its reader is here.
    const readers = objects.map((o) => (isAwaited(o) ? undefined : o));
    let complete = 0;
    // A layer opens to the forward once every object's copy of it is written and verified (announced blocks are
    // written before they are verified, storage LayerVerification).
    let opened = 0;
    const open = (): void => {
      let ready = complete;
      for (const r of readers) ready = Math.min(ready, r?.verification?.through ?? layers);
      if (ready <= opened) return;
      opened = ready;
      gates.setWritten(ready);
    };
    const arrived = (i: number, reader: KVBlockReader): AsyncIterator<KVBlock> => {
      readers[i] = reader;
      reader.verification?.onAdvance(open);
      return reader.layers[Symbol.asyncIterator]();
    };
    const streams = objects.map((o, i) =>
      isAwaited(o) ? awaitedLayers(async () => arrived(i, this.checkedReader(await o.reader, o.tokens))) : arrived(i, o),
    );
    const sink: LayerSink = {
      write: async (i, block) => {
        const h = readers[i]!.header;
        const expected = written[i]!;
        if (expected === h.layers) throw new KdnError('KV_CORRUPT', `KV stream of ${h.layers} layers yielded more`);
        checkLayerOrder(block.layer, expected);
        await this.backend.writeKVLayer(this.cache, h, block, positions[i]!);
        written[i] = expected + 1;
        counts[expected]!++;
        while (complete < layers && counts[complete] === objects.length) complete++;
        open();
      },
      ended: (i) => checkLayerCount(readers[i]!, written[i]!),
    };
    try {
      const waited = await writeInLayerOrder(streams, sink, gates.stopped);
      complete = layers;
      open();
      return waited;
    } catch (err) {
      // Streams left midway stop reading once their pending read settles (not awaited: it may wait on the network,
      // whose fetch is the caller's to abort).
      for (const s of streams) void s.return?.()?.catch(() => undefined);
      throw err;
    }
  }

  private async prefillNow(tokens: ArrayLike<number>, logits: 'last' | 'all' | 'none'): Promise<Float32Array> {
    const ids = this.tokenIds(tokens);
    const n = ids.length;
    const vocab = this.model.config.vocabSize;
    this.checkRoom(n);
    await this.settleInjected();
    // A 'none' (a sink, a chunk) alone runs without reading logits back; beside decoding sequences it joins their step.
    const joins = this.decoder !== undefined && (logits === 'last' || !this.decoder.idle);
    const out =
      logits !== 'all' && joins
        ? await this.joinStep(ids, this.length, logits)
        : await this.backend.forward(this.cache, ids, this.length, logits);
    for (const id of ids) this.ids.push(id);
    this.lastLogits = logits === 'last' ? out : logits === 'all' ? out.slice((n - 1) * vocab) : undefined;
    return out;
  }

  /**
   * The forward of `ids` at `end`, over a context still being placed. Alone, it runs each layer as soon as the
   * context's copy of it is in place; while other sequences decode, it waits for the whole context and then joins
   * their next step rather than running alone between them.
   */
  private async forwardOverContext(ids: Uint32Array, end: number, logits: 'last' | 'all' | 'none', gate: LayerGate): Promise<Float32Array> {
    if (logits === 'all' || !this.decoder || this.decoder.idle) return this.backend.forward(this.cache, ids, end, logits, gate);
    await gate(this.model.config.layers - 1);
    return this.joinStep(ids, end, logits);
  }

  /** The forward of `ids` at `position` in the decoder's next step, with the other sequences' (a 'none' drops its logits). */
  private async joinStep(ids: Uint32Array, position: number, logits: 'last' | 'none'): Promise<Float32Array> {
    const out = await this.decoder!.step(this.cache, ids, position);
    return logits === 'last' ? out : new Float32Array(0);
  }

  /**
   * Waits for the device to confirm the rows injected since the last check. If it rejected any, they are dropped
   * (the session ends where it did before those injections) and the error is thrown.
   */
  private async settleInjected(): Promise<void> {
    const from = this.unsettledFrom;
    if (from === undefined) return;
    try {
      await this.backend.settleKVWrites(this.cache);
    } catch (err) {
      this.ids.length = Math.min(this.ids.length, from);
      this.lastLogits = undefined;
      throw err;
    } finally {
      this.unsettledFrom = undefined;
    }
  }

  /** Logits to sample the next token from; recomputed from the last token when the last call did not keep them. */
  private async nextLogits(): Promise<Float32Array> {
    if (this.lastLogits) return this.lastLogits;
    const last = this.ids[this.length - 1];
    if (last === undefined || last === INJECTED) {
      throw new KdnError('INVALID_ARGUMENT', 'generate needs the session to end with a prefilled token', {
        hint: 'prefill at least one token (e.g. the question) after injecting KV',
      });
    }
    this.ids.length -= 1;
    return this.prefillNow([last], 'last');
  }

  private async generateNow(options: GenerateOptions, onToken?: (token: GeneratedToken) => void): Promise<GenerateResult> {
    const started = performance.now();
    if (!Number.isInteger(options.maxTokens) || options.maxTokens < 1) {
      throw new KdnError('INVALID_ARGUMENT', `maxTokens must be a positive integer, got ${options.maxTokens}`);
    }
    let sampler: Sampler;
    try {
      sampler = new Sampler(options);
    } catch (err) {
      throw new KdnError('INVALID_ARGUMENT', (err as Error).message);
    }
    const stopIds = new Set([...(options.stopTokenIds ?? []), ...(options.ignoreEos ? [] : this.model.tokenizer.eosTokenIds)]);
    const stops = new StopStringFilter((options.stopStrings ?? []).filter((s) => s.length > 0));
    const stream = new TextStream(this.model.tokenizer);
    const tokens: number[] = [];
    let text = '';
    let firstTokenMs = -1;
    let finishReason: GenerateResult['finishReason'] = 'length';

    let logits = await this.nextLogits();
    for (;;) {
      if (options.signal?.aborted) {
        finishReason = 'aborted';
        stream.flush();
        text += stops.finish(stream.text).release;
        break;
      }
      const id = sampler.sample(logits);
      if (firstTokenMs < 0) firstTokenMs = performance.now() - started;
      if (stopIds.has(id)) {
        finishReason = 'stop';
        break;
      }
      tokens.push(id);
      stream.push(id);
      const last = tokens.length >= options.maxTokens || this.length + 1 >= this.capacity;
      // The last token also releases what was held back: an unfinished character or a partial stop string.
      if (last) stream.flush();
      const { release, stopped } = last ? stops.finish(stream.text) : stops.next(stream.text);
      text += release;
      onToken?.({ id, text: release });
      if (stopped) {
        finishReason = 'stop';
        break;
      }
      // The session keeps every generated token, so a later prefill or generate continues the text.
      if (this.length < this.capacity) logits = await this.prefillNow([id], 'last');
      if (last) break;
    }
    return { tokens, text, finishReason, firstTokenMs: Math.max(firstTokenMs, 0), totalMs: performance.now() - started };
  }
}
