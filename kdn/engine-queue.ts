/**
 * Runs engine work one task at a time: an engine and its sessions are not re-entrant, so ingest jobs and queries
 * take turns. `depth` counts tasks waiting or running, for the queue-depth gauge.
 */
export class EngineQueue {
  private tail: Promise<unknown> = Promise.resolve();
  private pending = 0;

  constructor(private readonly onDepth: (depth: number) => void = () => {}) {}

  get depth(): number {
    return this.pending;
  }

  run<T>(task: () => Promise<T>): Promise<T> {
    this.pending++;
    this.onDepth(this.pending);
    const result = this.tail.then(task);
    this.tail = result.then(
      () => this.finish(),
      () => this.finish(),
    );
    return result;
  }

  /** Resolves once every task queued so far has finished. */
  async idle(): Promise<void> {
    while (this.pending > 0) await this.tail;
  }

  private finish(): void {
    this.pending--;
    this.onDepth(this.pending);
  }
}
