/**
 * An engine over random weights built in memory from a config, for speed benchmarks of shapes we have no files
 * for (an 8B model would be 32 GB of float32 to write and load). One random Float32Array per tensor shape is
 * shared by every layer (and by lm_head with the embedding), which keeps host memory near one layer's worth plus
 * the embedding; the compute per token is the same as with distinct weights.
 */
import { createHash } from 'node:crypto';
import { KdnError } from '../../common/errors.ts';
import {
  BackendSession,
  defaultHotTierBytes,
  HotTier,
  buildModelInfo,
  openBackend,
  parseModelConfig,
  SerialBackend,
  WorkMeter,
  type BackendName,
  type Engine,
  type EngineWork,
  type ModelConfig,
  type ModelInfo,
  type ModelWeights,
  type Session,
  type SessionModel,
  type Tensor,
  type Tokenizer,
} from '../../engine-adapter/index.ts';
import type { TransformTable } from '../../storage/kv-object/codecs/transform-table.ts';
import { transformTables } from '../../storage/kv-object/codecs/transform-tables.ts';
import type { HfConfig } from './shapes.ts';

/** What the speed benchmarks need of an engine: sessions by token id, and what ran them. */
export interface BenchEngine {
  readonly info: ModelInfo;
  readonly backend: BackendName;
  readonly device: string;
  /** The model's tokenizer (a synthetic model's has ids only: its config's BOS and EOS, no text), e.g. for the sink token. */
  readonly tokenizer: Tokenizer;
  createSession(capacity: number): Session;
  /** Makes a transform table usable by injected objects (Engine.useTransformTable). */
  useTransformTable(table: TransformTable): Promise<void>;
  /** What its device has been busy with (Engine.work). */
  work(): Promise<EngineWork>;
  dispose(): Promise<void>;
}

/** An Engine as a BenchEngine. */
export function asBenchEngine(engine: Engine): BenchEngine {
  return {
    info: engine.info,
    backend: engine.backend,
    device: engine.device,
    tokenizer: engine.tokenizer,
    createSession: (capacity: number) => engine.createSession({ capacity }),
    useTransformTable: (table) => engine.useTransformTable(table),
    work: () => engine.work(),
    dispose: () => engine.dispose(),
  };
}

/** Uniform values with the given standard deviation, from a seeded xorshift (fast enough for 500M values). */
function randomArray(length: number, std: number, seed: number): Float32Array {
  const out = new Float32Array(length);
  const half = std * Math.sqrt(3);
  let s = (seed * 2654435761) >>> 0 || 1;
  for (let i = 0; i < length; i++) {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    out[i] = (((s >>> 0) / 4294967296) * 2 - 1) * half;
  }
  return out;
}

/** Random weights for `config`, one array per distinct tensor shape. */
export function syntheticWeights(config: ModelConfig, seed = 1): ModelWeights {
  const c = config;
  const cache = new Map<string, Tensor>();
  let next = seed;
  // Keyed by role as well as shape so that, e.g., a norm and a bias of the same length keep their own scales.
  const tensor = (role: string, shape: number[], make: (n: number) => Float32Array): Tensor => {
    const key = `${role}:${shape.join('x')}`;
    let t = cache.get(key);
    if (!t) {
      t = { shape, data: make(shape.reduce((a, b) => a * b, 1)) };
      cache.set(key, t);
    }
    return t;
  };
  const linear = (rows: number, cols: number): Tensor => tensor('linear', [rows, cols], (n) => randomArray(n, 1 / Math.sqrt(cols), next++));
  const ones = (n: number): Tensor => tensor('norm', [n], (len) => new Float32Array(len).fill(1));
  const bias = (n: number): Tensor => tensor('bias', [n], (len) => randomArray(len, 0.05, next++));
  const q = c.heads * c.headDim;
  const kv = c.kvHeads * c.headDim;
  const embed = tensor('embed', [c.vocabSize, c.hiddenSize], (n) => randomArray(n, 1, next++));
  const layers = Array.from({ length: c.layers }, () => ({
    inputNorm: ones(c.hiddenSize),
    q: linear(q, c.hiddenSize),
    k: linear(kv, c.hiddenSize),
    v: linear(kv, c.hiddenSize),
    o: linear(c.hiddenSize, q),
    ...(c.attentionBias ? { qBias: bias(q), kBias: bias(kv), vBias: bias(kv) } : {}),
    ...(c.qkNorm ? { qNorm: ones(c.headDim), kNorm: ones(c.headDim) } : {}),
    postAttentionNorm: ones(c.hiddenSize),
    gate: linear(c.intermediateSize, c.hiddenSize),
    up: linear(c.intermediateSize, c.hiddenSize),
    down: linear(c.hiddenSize, c.intermediateSize),
  }));
  return { config: c, embed, layers, finalNorm: ones(c.hiddenSize), lmHead: embed };
}

/** Synthetic models have ids but no text: encoding is refused, decoding names the ids. */
export function idTokenizer(config: ModelConfig): Tokenizer {
  return {
    encode(): number[] {
      throw new KdnError('INVALID_ARGUMENT', 'a synthetic benchmark model has no tokenizer', { hint: 'pass token ids' });
    },
    decode: (ids) => ids.map((id) => `<${id}>`).join(''),
    applyChatTemplate(): string {
      throw new KdnError('INVALID_ARGUMENT', 'a synthetic benchmark model has no chat template');
    },
    bosTokenId: config.bosTokenId,
    eosTokenIds: config.eosTokenIds,
  };
}

/**
 * Builds an engine for an HF config with random weights. `capacity` is the largest session the run will open
 * (the WebGPU backend checks it against the adapter's limits up front).
 */
export interface SyntheticOptions {
  backend: 'auto' | BackendName;
  capacity: number;
  seed?: number;
  hotTierBytes?: number;
}

/** A synthetic model on its backend (compute calls counted), for benchmarks that build their own sessions. */
export interface SyntheticModel {
  info: ModelInfo;
  backend: SerialBackend;
  model: SessionModel;
  meter: WorkMeter;
}

export async function openSyntheticModel(name: string, hfConfig: HfConfig, options: SyntheticOptions): Promise<SyntheticModel> {
  const config = parseModelConfig(hfConfig, `synthetic shape ${name}`);
  const seed = options.seed ?? 1;
  const fingerprint = createHash('sha256')
    .update(`kdn-synthetic-v1\n${name}\n${seed}\n${JSON.stringify(hfConfig)}`)
    .digest('hex');
  // Not kept here: the CPU backend holds the weights it computes with, the WebGPU backend its GPU copy, so the host
  // arrays of a GPU run can be collected once uploaded.
  const meter = new WorkMeter();
  const backend = new SerialBackend(
    await openBackend(options.backend, syntheticWeights(config, seed), {
      capacity: options.capacity,
      autoTakesSoftware: true,
    }),
    config.layers,
    meter,
  );
  return {
    info: buildModelInfo(config, `synthetic:${name}`, fingerprint),
    backend,
    model: { config, fingerprint, tokenizer: idTokenizer(config) },
    meter,
  };
}

export async function createSyntheticEngine(name: string, hfConfig: HfConfig, options: SyntheticOptions): Promise<BenchEngine> {
  const { info, backend, model, meter } = await openSyntheticModel(name, hfConfig, options);
  const hot = new HotTier(options.hotTierBytes ?? defaultHotTierBytes(model.config, options.capacity), info.fingerprint);
  return {
    info,
    backend: backend.name,
    device: backend.device,
    tokenizer: model.tokenizer,
    createSession: (capacity: number): Session => new BackendSession(backend, model, capacity, hot),
    useTransformTable: async (table) => backend.useTransformTable(transformTables.register(table)),
    work: async () => meter.snapshot(0, backend.kvWrites()),
    dispose: () => {
      hot.clear();
      return backend.dispose();
    },
  };
}
