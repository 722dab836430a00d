/**
 * Messages between an engine running on its own thread (engine-worker.ts) and the Engine/Session proxies the
 * control plane uses (remote-engine.ts). Calls carry an id and get one `result` or `error`; every answer about a
 * session carries its length afterwards, so the proxy's synchronous `length` stays exact. Arrays go by transfer.
 */
import type { MessagePort } from 'node:worker_threads';
import type { WireError } from '../../common/errors.ts';
import type { KVHeader, KVTensors } from '../../storage/kv-object/types.ts';
import type { CreateEngineOptions } from '../create-engine.ts';
import type { EngineWork } from '../engine-work.ts';
import type { PlacingTimelineReport } from '../placing-timeline.ts';
import type { RoutedBlock } from './routed-stream.ts';
import type {
  BackendName,
  BlendOptions,
  GenerateOptions,
  GenerateResult,
  GeneratedToken,
  HandOverTimes,
  ModelInfo,
  ResidentKey,
} from '../types.ts';

/**
 * Builds the engine on its thread instead of createEngine: a module (its URL) whose `openEngine(args)` resolves with
 * an Engine of sessions up to `capacity` tokens (benchmarks open their random-weight shapes this way).
 */
export interface EngineOpener {
  module: string;
  args: unknown;
  capacity: number;
}

/** What the engine's thread opens: a model directory (capacity resolved), or what an opener builds. */
export type EngineWorkerData = (CreateEngineOptions & { capacity: number }) | EngineOpener;

/**
 * A KV object streamed into the worker: its header with the call, then `block` messages, then `end` or `fail`; or,
 * with `port`, RoutedBlocks messages on that port straight from the thread that fetched it (routed-stream.ts).
 */
export interface StreamOpen {
  stream: number;
  /**
   * The object's header; absent for an object still on its way (an AwaitedObject of injectKVAndPrefill), whose
   * 'open' (or 'fail') follows the call, with `tokens` the count announced for it.
   */
  header?: KVHeader;
  tokens?: number;
  port?: MessagePort;
}

export type Call =
  | { op: 'prefill'; session: number; tokens: Uint32Array; logits: 'last' | 'all' | 'none' }
  | { op: 'exportKV'; session: number; start: number; end: number }
  /**
   * injectKV (one stream, no tokens), injectKVAndPrefill (tokens after the streams), or with `blend`
   * blendKVAndPrefill (each stream's chunk token ids, and how to blend).
   */
  | {
      op: 'inject';
      session: number;
      position: number;
      streams: StreamOpen[];
      tokens?: Uint32Array;
      logits?: 'last' | 'all' | 'none';
      /** PrefillOptions.timeline. */
      timeline?: boolean;
      blend?: { options: BlendOptions; tokenIds: Uint32Array[] };
    }
  /** `abort` is an Int32Array over shared memory: non-zero once the caller aborted (checked at every token). */
  | { op: 'generate'; session: number; options: Omit<GenerateOptions, 'signal'>; abort: Int32Array }
  | { op: 'reserve'; session: number; tokens: number }
  /** Engine.useTransformTable: the table's serialized bytes, parsed and verified on the engine thread. */
  | { op: 'useTransformTable'; bytes: Uint8Array }
  /** The hot tier: which keys are resident, place one by reference, keep rows of the session. */
  | { op: 'resident'; session: number; keys: ResidentKey[] }
  | { op: 'injectResident'; session: number; key: ResidentKey; position: number }
  | { op: 'keepResident'; session: number; key: ResidentKey; start: number; end: number }
  | { op: 'work' }
  | { op: 'dispose' };

export type ToEngine =
  | ({ type: 'call'; id: number } & Call)
  | { type: 'createSession'; session: number; capacity: number }
  | { type: 'truncate'; session: number; length: number }
  | { type: 'disposeSession'; session: number }
  /** A verified layer block of an open stream (lz4 already undone); `bytes` was transferred. */
  | ({ type: 'block'; stream: number } & RoutedBlock)
  | { type: 'end'; stream: number }
  | { type: 'fail'; stream: number; error: WireError }
  /** The header of a stream opened without one came: its blocks follow on `port` (routed) or as 'block' messages. */
  | { type: 'open'; stream: number; header: KVHeader; port?: MessagePort };

export interface Ready {
  info: ModelInfo;
  backend: BackendName;
  device: string;
  /** Largest session capacity the engine was opened for. */
  maxCapacity: number;
}

export type CallValue =
  | { op: 'prefill'; logits: Float32Array }
  | { op: 'exportKV'; tensors: KVTensors }
  /**
   * `placedAtEpoch`: performance.timeOrigin + performance.now() on the worker when the objects were placed;
   * `firstLayerAtEpoch` and `handOverEpoch` likewise for InjectedPrefill.firstLayerAt and types.ts HandOverTimes;
   * `blockWaitMs` is InjectedPrefill's, a duration.
   */
  | {
      op: 'inject';
      logits?: Float32Array;
      placedAtEpoch?: number;
      firstLayerAtEpoch?: number;
      blockWaitMs?: number;
      handOverEpoch?: HandOverTimes;
      blended?: { recomputed: number; fullLayers: number };
      /** InjectedPrefill.timeline (its times are from its own start, on the worker). */
      timeline?: PlacingTimelineReport;
    }
  | { op: 'generate'; result: GenerateResult }
  | { op: 'reserve' }
  | { op: 'useTransformTable' }
  | { op: 'resident'; resident: boolean[] }
  | { op: 'injectResident'; injected: boolean }
  | { op: 'keepResident' }
  | { op: 'work'; work: EngineWork }
  | { op: 'dispose' };

export type FromEngine =
  | { type: 'ready'; ready: Ready }
  | { type: 'startFailed'; error: WireError }
  | { type: 'result'; id: number; value: CallValue; length?: number }
  | { type: 'error'; id: number; error: WireError; length?: number }
  | { type: 'token'; id: number; token: GeneratedToken };

/** The ArrayBuffers of `arrays` that each array spans whole (others are cloned), for a transfer list. */
export function transferable(arrays: readonly ArrayBufferView[]): ArrayBuffer[] {
  const out = new Set<ArrayBuffer>();
  for (const a of arrays) {
    if (a.buffer instanceof ArrayBuffer && a.byteOffset === 0 && a.byteLength === a.buffer.byteLength) out.add(a.buffer);
  }
  return [...out];
}
