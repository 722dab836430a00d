import { KdnError } from '../common/errors.ts';
import type { TransformTable } from '../storage/kv-object/codecs/transform-table.ts';
import type { KVHeader, KVBlock, KVTensors } from '../storage/kv-object/types.ts';
import type { LayerGate } from './layer-gates.ts';
import type { KvWriteWork } from './engine-work.ts';
import type { BackendName } from './types.ts';

/** Per-session KV storage owned by a backend (host arrays for cpu, GPU buffers for webgpu). */
export interface KVCacheHandle {
  readonly capacity: number;
  dispose(): void;
}

/**
 * A copy of a cache's rows [position, position + tokens) of every layer, in storage the backend owns (device memory
 * on webgpu), keys rotated at `position`. The hot tier (hot-tier.ts) keeps these across sessions.
 */
export interface KVRows {
  readonly tokens: number;
  readonly position: number;
  /** Bytes it holds (K and V of every layer). */
  readonly bytes: number;
  dispose(): void;
}

/** What a blended forward measures of the rows still running at a selecting layer, for the plan to select rows by. */
export interface BlendSignals {
  /**
   * Each row's squared distance between its fresh K/V and what the cache held at its slot (injected K/V), indexed by
   * row; meaningful for the candidate rows only.
   */
  deviation: Float32Array;
  /**
   * Each row's share of the attention the plan's last `massRows` rows pay at the check layer (summed over them and
   * the query heads, divided by their count), or null when the plan asked for none.
   */
  mass: Float32Array | null;
}

/**
 * How a blended forward (ForwardBackend.blendForward) chooses the rows it recomputes through every layer. The rows
 * are indices into the forward's tokens; `select` returns them ascending and always keeps the last row, whose
 * logits the forward returns.
 */
export interface BlendPlan {
  /**
   * The layer whose signals pick the rows: layers before it run every row, and at it every row's K/V is computed and
   * written over the cache (the signals measured first); the selected rows then run it and the layers after it.
   * null: the selection does not depend on the KV (select is called with null) and only the selected rows run, from
   * layer 0.
   */
  checkLayer: number | null;
  /** How many of the last rows (the prompt's) weigh the others by their attention (BlendSignals.mass); 0 for none. */
  massRows: number;
  /**
   * Gradual filtering: every layer after the check layer selects again, among the rows still running. Those compute
   * the layer's K/V (signals measured first, then written) and the selected ones run the rest of it and go on.
   */
  narrows: boolean;
  /** The rows that run `layer` and go on, among `candidates` (all rows at the check layer or without one). */
  select(signals: BlendSignals | null, layer: number, candidates: Uint32Array): Uint32Array;
}

/** What a blended forward returns: the last row's logits and the rows it recomputed. */
export interface BlendOutput {
  logits: Float32Array;
  /** The rows that ran the last layer. */
  rows: Uint32Array;
  /** The rows that ran each layer from the check layer (or layer 0) on, averaged over those layers. */
  meanRows: number;
}

/** One sequence of a batched forward: its own cache, the tokens it appends, and where they start. */
export interface BatchSequence<C extends KVCacheHandle = KVCacheHandle> {
  cache: C;
  tokens: Uint32Array;
  position: number;
}

/**
 * A batch's sequences with each cache as the backend's own (`own`), after the checks every backend makes: no cache
 * twice, at least one token each, and `check` (the backend's range and token checks).
 */
export function checkedBatch<C extends KVCacheHandle>(
  sequences: readonly BatchSequence[],
  own: (cache: KVCacheHandle) => C,
  check: (cache: C, tokens: Uint32Array, position: number) => void,
): BatchSequence<C>[] {
  const caches = new Set<C>();
  return sequences.map((seq) => {
    const cache = own(seq.cache);
    if (caches.has(cache)) throw new KdnError('INVALID_ARGUMENT', 'a batched forward names one cache twice');
    caches.add(cache);
    if (seq.tokens.length === 0) throw new KdnError('INVALID_ARGUMENT', 'every sequence of a batched forward needs at least one token');
    check(cache, seq.tokens, seq.position);
    return { cache, tokens: seq.tokens, position: seq.position };
  });
}

/**
 * The compute a backend provides. Session logic (positions, sampling, generation, stop handling) lives once in
 * ./session.ts on top of this, so the cpu and webgpu backends differ only here.
 */
export interface ForwardBackend {
  readonly name: BackendName;
  readonly device: string;
  createKVCache(capacity: number): KVCacheHandle;
  /**
   * Runs `tokens` at positions [position, position + tokens.length), writing their KV (keys after RoPE) into the
   * cache. Returns logits: last token [vocab], all tokens [tokens][vocab], or an empty array for 'none'.
   * With `gate`, each layer waits for gate(layer) before it runs (its context may still be arriving), while the
   * layers before it already run; the layers up to the count it resolves with may run without asking again. A
   * rejected gate ends the forward with that error.
   */
  forward(
    cache: KVCacheHandle,
    tokens: Uint32Array,
    position: number,
    logits: 'last' | 'all' | 'none',
    gate?: LayerGate,
  ): Promise<Float32Array>;
  /**
   * One forward for several sequences, each on its own cache (decode steps of one token, and prompts joining them):
   * the matmuls run over every sequence's rows at once, so each weight is read once per step, while attention runs
   * per sequence over its own cache. Returns each sequence's last-row logits, in order. The caches must differ.
   */
  batchForward(sequences: readonly BatchSequence[]): Promise<Float32Array[]>;
  /**
   * Selective recompute (CacheBlend): `tokens` sit at [position, position + tokens.length), where the cache already
   * holds KV computed without their real prefix (independently injected chunks), except for trailing rows such as a
   * question, which `plan` always selects. Runs `plan` (see BlendPlan), writing the recomputed rows' KV over the
   * injected KV, every selected row attending to the whole cache before it. With `gate`, layer l waits for gate(l).
   */
  blendForward(
    cache: KVCacheHandle,
    tokens: Uint32Array,
    position: number,
    plan: BlendPlan,
    logits: 'last' | 'none',
    gate?: LayerGate,
  ): Promise<BlendOutput>;
  /** KV of [start, end), keys after RoPE at their positions, in the KV object layout. */
  readKV(cache: KVCacheHandle, start: number, end: number): Promise<KVTensors>;
  /**
   * Writes one verified layer block of a chunk whose header is `header` at `position`: keys are re-rotated by
   * (position - header.positionBase) when header.ropeApplied, or rotated at `position` when stored before RoPE.
   * The block's bytes are copied or decoded before the promise resolves and never read after: the stream they came
   * from may then reuse them (worker/block-channel.ts hands their buffer back).
   */
  writeKVLayer(cache: KVCacheHandle, header: KVHeader, block: KVBlock, position: number): Promise<void>;
  /**
   * Resolves once every layer written so far is in the cache or queued where nothing can fail any more; a write
   * the device rejected throws here. Backends may batch writeKVLayer calls until this (or the next forward).
   */
  settleKVWrites(cache: KVCacheHandle): Promise<void>;
  /**
   * Starts every layer written so far on its way into the cache: a gated forward may read them once it resolves
   * (at once, unless a backend still reads their bytes from their source files).
   */
  flushKVWrites(cache: KVCacheHandle): Promise<void>;
  /** The host side of every writeKVLayer and flush so far, over all caches. */
  kvWrites(): KvWriteWork;
  /**
   * Makes a verified transform-codec table usable for the blocks that name it (the webgpu backend uploads it; the
   * cpu backend decodes through the storage codec, which finds it in the process's table registry).
   */
  useTransformTable(table: TransformTable): void;
  /** Copies rows [start, end) of every layer out of the cache (after the writes before it). */
  saveKVRows(cache: KVCacheHandle, start: number, end: number): Promise<KVRows>;
  /**
   * Copies saved rows into the cache at `position`, keys re-rotated by (position - rows.position). Like
   * writeKVLayer, it may be batched until settleKVWrites or the next forward, which report a device failure.
   */
  loadKVRows(cache: KVCacheHandle, rows: KVRows, position: number): Promise<void>;
  /** Grows the cache to hold `tokens` tokens (within its capacity) before they arrive. */
  reserveKV(cache: KVCacheHandle, tokens: number): Promise<void>;
  dispose(): Promise<void>;
}
