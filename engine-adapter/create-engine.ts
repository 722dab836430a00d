import { KdnError } from '../common/errors.ts';
import { parseTransformTable, type TransformTable } from '../storage/kv-object/codecs/transform-table.ts';
import { transformTables } from '../storage/kv-object/codecs/transform-tables.ts';
import type { ForwardBackend } from './backend.ts';
import { checkBatchingOptions, DecodeBatcher, type BatchingOptions } from './decode-batcher.ts';
import { loadModelConfig } from './model/load-config.ts';
import { loadModelWeights } from './model/load-weights.ts';
import { buildModelInfo } from './model/model-info.ts';
import { loadTokenizer } from './model/tokenizer.ts';
import type { ModelWeights } from './model/weights.ts';
import { openBackend } from './open-backend.ts';
import { SerialBackend } from './serial-backend.ts';
import { WorkMeter, type EngineWork } from './engine-work.ts';
import { BackendSession } from './session.ts';
import { defaultHotTierBytes, HotTier } from './hot-tier.ts';
import type { BackendName, Engine, ModelInfo, Session, Tokenizer } from './types.ts';

export interface CreateEngineOptions {
  modelDir: string;
  /** 'auto' (default): WebGPU on a hardware adapter, else the CPU reference (faster than a software adapter). */
  backend?: 'auto' | BackendName;
  /**
   * Largest session capacity in tokens, and the default one; min(max_position_embeddings, 8192) when absent.
   * The WebGPU backend sizes its buffers for it.
   */
  capacity?: number;
  /**
   * Bytes of expanded KV the hot tier keeps across queries (hot-tier.ts); 0 disables it. Default: half of a
   * full-capacity session's KV (defaultHotTierBytes).
   */
  hotTierBytes?: number;
  /**
   * Continuous batching of concurrent sessions' generation (engine-adapter/decode-batcher.ts); absent or
   * maxSequences 1: every forward runs alone, and calls on different sessions must not overlap.
   */
  batching?: BatchingOptions;
}

class ModelEngine implements Engine {
  private readonly sessions = new Set<BackendSession>();
  private readonly decoder: DecodeBatcher | undefined;
  private readonly meter = new WorkMeter();
  private readonly forward: ForwardBackend;

  constructor(
    readonly info: ModelInfo,
    readonly tokenizer: Tokenizer,
    backend: ForwardBackend,
    private readonly weights: ModelWeights,
    private readonly maxCapacity: number,
    private readonly hot: HotTier,
    batching?: BatchingOptions,
  ) {
    // Sessions may compute concurrently (they do when they decode together): their compute calls take turns.
    this.forward = new SerialBackend(backend, weights.config.layers, this.meter);
    if (batching && batching.maxSequences > 1) this.decoder = new DecodeBatcher(this.forward, batching);
  }

  get backend(): BackendName {
    return this.forward.name;
  }

  get device(): string {
    return this.forward.device;
  }

  createSession(options: { capacity?: number } = {}): Session {
    if (options.capacity !== undefined && options.capacity > this.maxCapacity) {
      throw new KdnError('CONTEXT_TOO_LONG', `session capacity ${options.capacity} exceeds the engine's ${this.maxCapacity} tokens`, {
        hint: 'create the engine with a larger capacity',
      });
    }
    const session = new BackendSession(
      this.forward,
      { config: this.weights.config, fingerprint: this.info.fingerprint, tokenizer: this.tokenizer },
      options.capacity ?? this.maxCapacity,
      this.hot,
      this.decoder,
    );
    this.sessions.add(session);
    return session;
  }

  async useTransformTable(given: TransformTable | Uint8Array): Promise<void> {
    const table = given instanceof Uint8Array ? parseTransformTable(given) : given;
    const c = this.weights.config;
    const sameShape = table.layers === c.layers && table.kvHeads === c.kvHeads && table.headDim === c.headDim;
    if (table.modelFingerprint !== this.info.fingerprint || !sameShape) {
      throw new KdnError('KV_MISMATCH', `transform table ${table.hash.slice(0, 16)}... was fitted for another model`, {
        hint: 'fit and store a transform table for this model',
      });
    }
    this.forward.useTransformTable(transformTables.register(table));
  }

  async work(): Promise<EngineWork> {
    return this.meter.snapshot(this.decoder?.stats.sequences ?? 0, this.forward.kvWrites());
  }

  async dispose(): Promise<void> {
    for (const s of this.sessions) s.dispose();
    this.sessions.clear();
    this.hot.clear();
    await this.forward.dispose();
  }
}

/** Loads a Hugging Face model directory and opens it on the requested backend. */
export async function createEngine(options: CreateEngineOptions): Promise<Engine> {
  const config = await loadModelConfig(options.modelDir);
  const capacity = options.capacity ?? Math.min(config.maxPositionEmbeddings, 8192);
  if (options.batching) checkBatchingOptions(options.batching);
  if (!Number.isInteger(capacity) || capacity < 1 || capacity > config.maxPositionEmbeddings) {
    throw new KdnError('INVALID_ARGUMENT', `capacity ${capacity} must be an integer in [1, ${config.maxPositionEmbeddings}]`);
  }
  const hotTierBytes = options.hotTierBytes ?? defaultHotTierBytes(config, capacity);
  if (!Number.isSafeInteger(hotTierBytes) || hotTierBytes < 0) {
    const hint = '0 disables the hot tier';
    throw new KdnError('INVALID_ARGUMENT', `hotTierBytes ${hotTierBytes} must be a non-negative integer`, { hint });
  }
  const tokenizer = await loadTokenizer(options.modelDir, config);
  const loaded = await loadModelWeights(options.modelDir, config);
  const backend = await openBackend(options.backend ?? 'auto', loaded.weights, { capacity });
  const hot = new HotTier(hotTierBytes, loaded.fingerprint);
  const info = buildModelInfo(config, options.modelDir, loaded.fingerprint);
  return new ModelEngine(info, tokenizer, backend, loaded.weights, capacity, hot, options.batching);
}
