import type { TransformTable } from '../storage/kv-object/codecs/transform-table.ts';
import type { KVBlockReader, KVTensors } from '../storage/kv-object/types.ts';
import type { EngineWork } from './engine-work.ts';
import type { PlacingTimelineReport } from './placing-timeline.ts';

/** What `kdn model-info` prints and what keys KV objects. */
export interface ModelInfo {
  /** e.g. LlamaForCausalLM */
  architecture: string;
  /** Directory the model was loaded from. */
  path: string;
  layers: number;
  hiddenSize: number;
  intermediateSize: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  vocabSize: number;
  maxPositionEmbeddings: number;
  parameters: number;
  /** fp16 KV bytes per token: 2 (K and V) x layers x kvHeads x headDim x 2 bytes. */
  kvBytesPerToken: number;
  /** Changes whenever the architecture or any weight changes. */
  fingerprint: string;
}

export type BackendName = 'webgpu' | 'cpu';

export interface Tokenizer {
  encode(text: string, options?: { addSpecialTokens?: boolean }): number[];
  decode(ids: number[], options?: { skipSpecialTokens?: boolean }): string;
  /** Renders chat messages with the model's chat template (adds the generation prompt). */
  applyChatTemplate(messages: ChatMessage[]): string;
  readonly bosTokenId: number | undefined;
  readonly eosTokenIds: number[];
}

export interface ChatMessage {
  role: 'system' | 'user' | 'assistant';
  content: string;
}

export interface PrefillOptions {
  /** 'last' (default): logits of the last token only; 'all': [tokens][vocab] for teacher forcing. */
  logits?: 'last' | 'all' | 'none';
  /** injectKVAndPrefill: record when its parts happened (InjectedPrefill.timeline), for profiling. */
  timeline?: boolean;
}

export interface GenerateOptions {
  maxTokens: number;
  /** 0 (default) is greedy. */
  temperature?: number;
  topP?: number;
  seed?: number;
  stopTokenIds?: number[];
  /** Do not stop at the model's end-of-sequence tokens (fixed-length runs, reference comparisons). */
  ignoreEos?: boolean;
  stopStrings?: string[];
  signal?: AbortSignal;
}

export interface GeneratedToken {
  id: number;
  /** Text newly completed by this token (may be '' while a multi-byte character is pending). */
  text: string;
}

export interface GenerateResult {
  tokens: number[];
  text: string;
  finishReason: 'stop' | 'length' | 'aborted';
  /** Milliseconds from the generate() call to the first token. */
  firstTokenMs: number;
  totalMs: number;
}

export interface InjectedPrefill {
  /** As prefill returns them. */
  logits: Float32Array;
  /** performance.now() when the objects' last layer was placed (the rest of the call is the prompt's last layers). */
  placedAt: number;
  /** performance.now() when every object's first layer was placed: the prompt's first layer could run from then. */
  firstLayerAt: number;
  /**
   * Milliseconds placing had no block at hand while objects were still coming (layer-order.ts): the rest of the time
   * to placedAt the engine's thread was writing blocks or busy with other work.
   */
  blockWaitMs: number;
  /** An engine on its own thread: when the objects reached it; absent where it reads them on the caller's thread. */
  handOver?: HandOverTimes;
  /** When the call's parts happened (placing-timeline.ts), if PrefillOptions.timeline asked for it. */
  timeline?: PlacingTimelineReport;
}

/**
 * performance.now() on the caller's clock when the engine's thread began an inject call, when the first of its
 * objects' blocks reached that thread, and when the last did. Beside the caller's view of the objects' arrival they
 * say whether a query waits on the hand-over or on the engine's thread.
 */
export interface HandOverTimes {
  startedAt: number;
  firstBlockAt: number;
  receivedAt: number;
}

/** How a blended prefill picks the context tokens it recomputes (engine-adapter/blend-selection.ts). */
export type BlendSelection = 'attended' | 'gradual' | 'deviation' | 'chunk-start' | 'combined';

export interface BlendOptions {
  /**
   * Fraction of the context's tokens recomputed through the layers from the check layer on, in [0, 1] (for a
   * selection that narrows layer by layer, averaged over those layers).
   */
  ratio: number;
  selection: BlendSelection;
  /** Record when the call's parts happened (BlendedPrefill.timeline), for profiling. */
  timeline?: boolean;
}

/**
 * A KV object whose header has not come yet (a fetch over the network): how many tokens it holds, known from the
 * plan, and its reader once it comes (rejecting fails the call). The header must then say the same token count.
 */
export interface AwaitedObject {
  tokens: number;
  reader: Promise<KVBlockReader>;
}

/** What Session.injectKVAndPrefill places: a reader in hand, or one still on its way. */
export type InjectedObject = KVBlockReader | AwaitedObject;

/** Whether `o` is still on its way (a reader in hand carries its header). */
export function isAwaited(o: InjectedObject): o is AwaitedObject {
  return !('header' in o);
}

/** A chunk to blend: its KV object and the token ids it was computed from (checked against the header's hash). */
export interface BlendChunk {
  object: KVBlockReader;
  tokenIds: ArrayLike<number>;
}

export interface BlendedPrefill extends InjectedPrefill {
  /**
   * Context tokens recomputed through the layers from the check layer (or layer 0) on, averaged over those layers and
   * rounded (the prompt's tokens not counted).
   */
  recomputed: number;
  /**
   * Layers every context token ran before the selection (0 for a selection that needs no check layer); every token's
   * K/V at the next layer (the check layer) is recomputed too.
   */
  fullLayers: number;
}

/**
 * A chunk object's identity in the engine's hot tier (engine-adapter/hot-tier.ts): the tenant whose query placed it,
 * its object key (which names the codec) and the hash of its token ids. The engine adds its model's fingerprint.
 */
export interface ResidentKey {
  tenant: string;
  objectKey: string;
  tokenHash: string;
}

/** A sequence being built up on one backend; its KV cache lives with the backend (on the GPU for webgpu). */
export interface Session {
  /** Tokens held so far (prefilled or injected). */
  readonly length: number;
  readonly capacity: number;
  /** Appends tokens at position `length`; returns logits per `options.logits` (last token by default). */
  prefill(tokens: ArrayLike<number>, options?: PrefillOptions): Promise<Float32Array>;
  /** Reads back the KV of tokens [start, end) in the KV object layout, keys after RoPE at their positions. */
  exportKV(range: { start: number; end: number }): Promise<KVTensors>;
  /**
   * Places a chunk's KV at `position` (must equal `length`: the session grows by the chunk's tokens), re-rotating
   * keys computed at another base, layer by layer as the reader yields them. Verifies fingerprint and shape.
   * The device's confirmation is not awaited: should it reject the rows, the next call that reads the cache
   * (prefill, generate, exportKV) throws and the session ends where it did before the rejected injections.
   */
  injectKV(object: KVBlockReader, position: number): Promise<void>;
  /**
   * injectKV of `objects` at consecutive positions from `length`, then prefill(tokens) after them, overlapped: the
   * objects' layers are placed layer by layer across all of them as they arrive, and the prompt runs each layer as
   * soon as every object's copy of it is in place, so its compute hides behind the transfer of later layers. An
   * object may still be on its way (AwaitedObject): its rows are set aside by its token count, and its layers placed
   * once its reader comes. All or nothing: on any failure (an object's reader or stream, the device) the session is
   * left as it was.
   */
  injectKVAndPrefill(objects: readonly InjectedObject[], tokens: ArrayLike<number>, options?: PrefillOptions): Promise<InjectedPrefill>;
  /**
   * Like injectKVAndPrefill, for chunks whose KV was computed alone (not after the chunks before them): their layers
   * are placed as they arrive, then a selective recompute (CacheBlend) runs the context's tokens through the first
   * layers, and a `blend.ratio` share of them, with the prompt, through the rest, attending to the whole composed
   * context. All or nothing, as injectKVAndPrefill.
   */
  blendKVAndPrefill(chunks: readonly BlendChunk[], tokens: ArrayLike<number>, blend: BlendOptions): Promise<BlendedPrefill>;
  /** Which of `keys` the engine's hot tier holds now (one answer per key, in order). */
  residentChunks(keys: readonly ResidentKey[]): Promise<boolean[]>;
  /**
   * Places a resident chunk's KV at `position` (must equal `length`) by copies on the device, re-rotating its keys
   * if it was kept at another position; no bytes are transferred. Returns false (and changes nothing) when the chunk
   * is not resident (any more). Confirmed by the device like injectKV.
   */
  injectResident(key: ResidentKey, position: number): Promise<boolean>;
  /**
   * Keeps rows [start, end) of this session in the engine's hot tier under `key`: the caller vouches that they hold
   * the KV of the chunk `key` names. Evicts least recently used entries to make room; does nothing with the tier off.
   */
  keepResident(key: ResidentKey, range: { start: number; end: number }): Promise<void>;
  /** Samples from the logits of the last prefilled token onwards; `onToken` streams tokens as they come. */
  generate(options: GenerateOptions, onToken?: (token: GeneratedToken) => void): Promise<GenerateResult>;
  /** Drops tokens after `length` (to reuse a session). */
  truncate(length: number): void;
  /**
   * Makes room for `tokens` tokens now (at most the capacity). The cache otherwise grows by doubling as tokens
   * arrive; a caller that knows its context size (injected chunks plus a question) saves the growth copies.
   */
  reserve(tokens: number): Promise<void>;
  dispose(): void;
}

export interface Engine {
  readonly info: ModelInfo;
  readonly backend: BackendName;
  /** Human-readable adapter description, e.g. "NVIDIA H100 (vulkan)" or "SwiftShader (cpu)". */
  readonly device: string;
  readonly tokenizer: Tokenizer;
  createSession(options?: { capacity?: number }): Session;
  /**
   * Makes a transform-codec table (parsed, or its serialized bytes, verified here) usable by injections of objects
   * that name it: registered on the engine's thread and uploaded to its device. Once per table, before the first
   * such object; again is a no-op. A table of another model is KV_MISMATCH.
   */
  useTransformTable(table: TransformTable | Uint8Array): Promise<void>;
  /** What the device has been busy with since the engine opened (engine-work.ts). */
  work(): Promise<EngineWork>;
  dispose(): Promise<void>;
}
