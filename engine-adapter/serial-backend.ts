import type { BatchSequence, BlendOutput, BlendPlan, ForwardBackend, KVCacheHandle, KVRows } from './backend.ts';
import type { EngineCall, KvWriteWork, WorkMeter } from './engine-work.ts';
import type { LayerGate } from './layer-gates.ts';
import type { BackendName } from './types.ts';
import type { TransformTable } from '../storage/kv-object/codecs/transform-table.ts';
import type { KVHeader, KVBlock, KVTensors } from '../storage/kv-object/types.ts';

/**
 * A backend whose compute calls (forwards and KV reads) run one at a time, in call order. Backends share their
 * activation scratch between sessions and a forward may wait between layers (a gated one, for its context), so
 * sessions that compute concurrently, as they do when they decode together, must not interleave them. KV writes
 * pass straight through: they touch only their own session's cache, through the backend's own write batching.
 */
export class SerialBackend implements ForwardBackend {
  private tail: Promise<unknown> = Promise.resolve();
  /** Calls queued or running. */
  private pending = 0;

  constructor(
    private readonly inner: ForwardBackend,
    private readonly layers: number,
    private readonly meter: WorkMeter,
  ) {}

  get name(): BackendName {
    return this.inner.name;
  }

  get device(): string {
    return this.inner.device;
  }

  createKVCache(capacity: number): KVCacheHandle {
    return this.inner.createKVCache(capacity);
  }

  forward(
    cache: KVCacheHandle,
    tokens: Uint32Array,
    position: number,
    logits: 'last' | 'all' | 'none',
    gate?: LayerGate,
  ): Promise<Float32Array> {
    return this.serial('forward', () => this.inner.forward(cache, tokens, position, logits, gate), gate);
  }

  batchForward(sequences: readonly BatchSequence[]): Promise<Float32Array[]> {
    return this.serial('batchForward', () => this.inner.batchForward(sequences));
  }

  blendForward(
    cache: KVCacheHandle,
    tokens: Uint32Array,
    position: number,
    plan: BlendPlan,
    logits: 'last' | 'none',
    gate?: LayerGate,
  ): Promise<BlendOutput> {
    return this.serial('blendForward', () => this.inner.blendForward(cache, tokens, position, plan, logits, gate), gate);
  }

  readKV(cache: KVCacheHandle, start: number, end: number): Promise<KVTensors> {
    return this.serial('readKV', () => this.inner.readKV(cache, start, end));
  }

  saveKVRows(cache: KVCacheHandle, start: number, end: number): Promise<KVRows> {
    return this.serial('saveKVRows', () => this.inner.saveKVRows(cache, start, end));
  }

  loadKVRows(cache: KVCacheHandle, rows: KVRows, position: number): Promise<void> {
    return this.inner.loadKVRows(cache, rows, position);
  }

  useTransformTable(table: TransformTable): void {
    this.inner.useTransformTable(table);
  }

  writeKVLayer(cache: KVCacheHandle, header: KVHeader, block: KVBlock, position: number): Promise<void> {
    return this.inner.writeKVLayer(cache, header, block, position);
  }

  settleKVWrites(cache: KVCacheHandle): Promise<void> {
    return this.inner.settleKVWrites(cache);
  }

  flushKVWrites(cache: KVCacheHandle): Promise<void> {
    return this.inner.flushKVWrites(cache);
  }

  kvWrites(): KvWriteWork {
    return this.inner.kvWrites();
  }

  reserveKV(cache: KVCacheHandle, tokens: number): Promise<void> {
    return this.inner.reserveKV(cache, tokens);
  }

  dispose(): Promise<void> {
    return this.inner.dispose();
  }

  /**
   * Runs fn after every call before it. A gated forward whose turn would hold the others up while its context
   * arrives (they are computing or waiting) first waits for all of its context outside the queue: a lone one still
   * overlaps its layers with the arrival, and decoding sequences do not stall behind a transfer.
   */
  private async serial<T>(call: EngineCall, fn: () => Promise<T>, gate?: LayerGate): Promise<T> {
    if (gate && this.pending > 0) await gate(this.layers - 1);
    this.pending++;
    const timed = (): Promise<T> => this.meter.time(call, fn);
    const run = this.tail.then(timed, timed);
    this.tail = run.catch(() => undefined);
    try {
      return await run;
    } finally {
      this.pending--;
    }
  }
}
