/**
 * The --max-seconds budget of a benchmark: checked between measurements, so a long run stops cleanly between two
 * of them and still returns (and so writes) what it gathered. A measurement already started is never cut.
 */
export class Deadline {
  private readonly endsAt: number;

  constructor(readonly seconds: number) {
    this.endsAt = performance.now() + seconds * 1000;
  }

  get expired(): boolean {
    return performance.now() >= this.endsAt;
  }

  /** Seconds left (Infinity without a budget). */
  get remainingSeconds(): number {
    return Math.max(0, (this.endsAt - performance.now()) / 1000);
  }

  /** What records write in place of figures that were not measured because the budget ran out. */
  get reason(): string {
    return `skipped: --max-seconds ${this.seconds} budget reached`;
  }
}
