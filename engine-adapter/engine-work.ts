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
}

/** Counts the compute calls of one engine (see EngineWork). */
export class WorkMeter {
  private readonly calls = Object.fromEntries(ENGINE_CALLS.map((c) => [c, { count: 0, seconds: 0 }])) as EngineWork['calls'];

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

  /** The counts so far; `batchSequences` from the engine's decode batcher, if it has one. */
  snapshot(batchSequences = 0): EngineWork {
    const calls = Object.fromEntries(ENGINE_CALLS.map((c) => [c, { ...this.calls[c] }])) as EngineWork['calls'];
    return { calls, batchSequences };
  }
}
