import { constants, PerformanceObserver, performance } from 'node:perf_hooks';

/** The compute calls an engine's backend runs one at a time (serial-backend.ts), as counted in EngineWork. */
export const ENGINE_CALLS = ['forward', 'batchForward', 'blendForward', 'readKV', 'saveKVRows'] as const;
export type EngineCall = (typeof ENGINE_CALLS)[number];

/**
 * What an engine's device has been busy with since it opened (Engine.work): per kind of compute call, how many ran
 * and the seconds from each one's start to its result, queueing excluded. The calls run one at a time, so the
 * seconds add up to the engine's busy time, and busy time near the time elapsed says the engine, not the control
 * plane, bounds throughput.
 */
export interface EngineWork {
  calls: Record<EngineCall, { count: number; seconds: number }>;
  /** Sequences the batched decode steps (calls.batchForward) carried together. */
  batchSequences: number;
  kvWrites: KvWriteWork;
  loop: LoopWork;
}

/**
 * The event loop of the thread the engine runs on (its own thread, or the control plane's), since that thread
 * started (performance.eventLoopUtilization): active near the time elapsed while a context's placing lags its
 * arrival says the thread is saturated; mostly idle says it is waiting (on the device, or on blocks still in flight).
 */
export interface LoopWork {
  activeSeconds: number;
  idleSeconds: number;
  /**
   * That thread's garbage collection pauses since its first engine opened: their seconds, and how many were full
   * (mark-compact) collections. Counted from perf_hooks' 'gc' entries, which arrive a little after each pause, so a
   * reading can miss the last few. A full collection pauses the thread that places an injected context for
   * milliseconds; on the engine's thread external memory sets most of them off, mapped staging ranges among it
   * (bench/results/mapped-range-gc.json).
   */
  gcSeconds: number;
  majorGcs: number;
}

/** The share of the time between two readings the engine's thread was active (null when no time passed). */
export function loopBusyBetween(before: LoopWork, after: LoopWork): number | null {
  const active = after.activeSeconds - before.activeSeconds;
  const total = active + after.idleSeconds - before.idleSeconds;
  return total > 0 ? active / total : null;
}

/**
 * The host side of placing injected KV layer blocks (ForwardBackend.writeKVLayer), which runs on the engine's thread
 * beside its compute calls: where an injected context's placing lags its arrival, these say whether the thread was
 * copying, submitting or waiting on the device.
 */
export interface KvWriteWork {
  blocks: number;
  /** Encoded bytes of those blocks. */
  bytes: number;
  /**
   * Copying blocks to where the device reads them (WebGPU: mapped staging buffers; CPU: decoding into the cache), or
   * asking for them to be read there from their source file (WebGPU: readBlocks).
   */
  stageSeconds: number;
  /**
   * Blocks read from their source file (storage KVBlockSource): WebGPU, into staging on libuv's pool instead of
   * copied on this thread; CPU, on this thread, for blocks that came without bytes (KVFileBlock).
   */
  readBlocks: number;
  /** Recording the blocks' expansion into the cache and submitting it with their upload (WebGPU). */
  submitSeconds: number;
  /** Waiting for a staging buffer the device was still reading (WebGPU); the thread may run other work meanwhile. */
  waitSeconds: number;
  /** Batches submitted (WebGPU: a staging buffer's upload with the expansions recorded since the last one). */
  submits: number;
  /** Expansion dispatches those batches recorded (WebGPU). */
  dispatches: number;
}

export function noKvWrites(): KvWriteWork {
  return { blocks: 0, bytes: 0, stageSeconds: 0, readBlocks: 0, submitSeconds: 0, waitSeconds: 0, submits: 0, dispatches: 0 };
}

/** What was counted from `before` to `after`: the work of the queries in between. */
export function kvWritesBetween(before: KvWriteWork, after: KvWriteWork): KvWriteWork {
  const since = noKvWrites();
  for (const k of Object.keys(since) as (keyof KvWriteWork)[]) since[k] = after[k] - before[k];
  return since;
}

/** This thread's garbage collections (LoopWork), counted from the first call to threadGc on it. */
class GcMeter {
  seconds = 0;
  major = 0;

  constructor() {
    new PerformanceObserver((list) => {
      for (const entry of list.getEntries()) {
        this.seconds += entry.duration / 1000;
        if ((entry as { detail?: { kind?: number } }).detail?.kind === constants.NODE_PERFORMANCE_GC_MAJOR) this.major++;
      }
    }).observe({ entryTypes: ['gc'] });
  }
}

let gcMeter: GcMeter | undefined;

/**
 * This thread's garbage collection pauses and full collections so far (LoopWork's gcSeconds and majorGcs), counted
 * from its first call on this thread: a caller that compares two readings calls it once before the work it measures.
 */
export function threadGc(): Pick<LoopWork, 'gcSeconds' | 'majorGcs'> {
  gcMeter ??= new GcMeter();
  return { gcSeconds: gcMeter.seconds, majorGcs: gcMeter.major };
}

/** Counts the compute calls of one engine (see EngineWork). */
export class WorkMeter {
  private readonly calls = Object.fromEntries(ENGINE_CALLS.map((c) => [c, { count: 0, seconds: 0 }])) as EngineWork['calls'];

  constructor() {
    // Collections are counted from the engine's opening on.
    threadGc();
  }

  /** Runs fn, counting its time under `call`. */
  async time<T>(call: EngineCall, fn: () => Promise<T>): Promise<T> {
    const start = performance.now();
    try {
      return await fn();
    } finally {
      const entry = this.calls[call];
      entry.count++;
      entry.seconds += (performance.now() - start) / 1000;
    }
  }

  /**
   * The counts so far; `batchSequences` from the engine's decode batcher, if it has one, `kvWrites` from its backend.
   * Called on the engine's thread, so `loop` is that thread's.
   */
  snapshot(batchSequences: number, kvWrites: KvWriteWork): EngineWork {
    const calls = Object.fromEntries(ENGINE_CALLS.map((c) => [c, { ...this.calls[c] }])) as EngineWork['calls'];
    const { active, idle } = performance.eventLoopUtilization();
    const loop = { activeSeconds: active / 1000, idleSeconds: idle / 1000, ...threadGc() };
    return { calls, batchSequences, kvWrites: { ...kvWrites }, loop };
  }
}
