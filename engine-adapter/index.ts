/** The engine adapter's public API: load a model, open sessions, export and inject KV. */
export type * from './types.ts';
export type { ForwardBackend, KVCacheHandle } from './backend.ts';
export type { Architecture, ModelConfig, RopeScaling } from './model/config.ts';
export type { LayerWeights, ModelWeights, Tensor } from './model/weights.ts';
export { createEngine, type CreateEngineOptions } from './create-engine.ts';
export { createEngineInWorker, createOpenedEngineInWorker } from './worker/remote-engine.ts';
export type { EngineOpener } from './worker/protocol.ts';
export { createCpuBackend } from './cpu/cpu-backend.ts';
export { openBackend, type OpenBackendOptions } from './open-backend.ts';
export { BackendSession, type SessionModel } from './session.ts';
export { SerialBackend } from './serial-backend.ts';
export { DecodeBatcher, type BatchingOptions } from './decode-batcher.ts';
export {
  ENGINE_CALLS,
  kvWritesBetween,
  loopBusyBetween,
  noKvWrites,
  WorkMeter,
  type EngineCall,
  type EngineWork,
  type KvWriteWork,
  type LoopWork,
} from './engine-work.ts';
export { defaultHotTierBytes, HotTier } from './hot-tier.ts';
export type { GateEvent, PieceEvent, PlacingTimelineReport, ReadLatencies, TimelineEvent, UploadEvent } from './placing-timeline.ts';
export { hundredths } from './placing-timeline.ts';
export { BLEND_SELECTIONS } from './blend-selection.ts';
export { kvBeforeRope } from './kv-before-rope.ts';
export { Sampler, type SamplerOptions } from './sampling.ts';
export { loadModelConfig, parseModelConfig } from './model/load-config.ts';
export { loadModelWeights, type LoadedModel } from './model/load-weights.ts';
export { fingerprintModel } from './model/fingerprint.ts';
export { loadTokenizer } from './model/tokenizer.ts';
export { TextStream } from './model/text-stream.ts';
export { buildModelInfo, kvBytesPerToken, parameterCount, readModelInfo } from './model/model-info.ts';
