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
  command: string;
  date: string;
  host: { cpus: string; cpuCount: number; node: string; platform: string };
}

/** A benchmark module: bench/<name>.ts. */
export interface BenchModule {
  run(args: string[]): Promise<BenchReport>;
}
