/** The shape every benchmark returns and every bench/results/<name>.json holds. */

export type BenchValue = string | number | boolean | null;

/** One measured row, e.g. one codec; keys are column names, numbers carry their unit in the key (encodeMBps). */
export type BenchRecord = Record<string, BenchValue>;

/** What a benchmark module's `run(args)` returns. */
export interface BenchReport {
  /** The inputs that shaped the measurement (data shape, repetitions), so results stay comparable. */
  params?: Record<string, BenchValue>;
  records: BenchRecord[];
}

/** A results file: the report plus where and how it was measured (added by bench/run.ts). */
export interface BenchResultFile extends BenchReport {
  name: string;
  /** True while the benchmark is still running (a checkpoint): the records so far, kept if it never finishes. */
  partial?: boolean;
  command: string;
  /** `git rev-parse HEAD` of the tree that ran, or null outside a git checkout. */
  commit: string | null;
  /** Present (true) when tracked files outside bench/results/ differed from that commit. */
  uncommittedChanges?: true;
  date: string;
  /**
   * uvThreadpoolSize: UV_THREADPOOL_SIZE as the run was started with (null: libuv's default of four), the pool on
   * which the GPU engine reads a same-host edge's KV into staging.
   */
  host: { cpus: string; cpuCount: number; node: string; platform: string; uvThreadpoolSize: string | null };
}

/** Writes the records so far as a partial results file (long GPU runs can be cut off by their time limit). */
export type Checkpoint = (report: BenchReport) => Promise<void>;

/** A benchmark module: bench/<name>.ts. */
export interface BenchModule {
  run(args: string[], checkpoint?: Checkpoint): Promise<BenchReport>;
}
