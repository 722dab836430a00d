/**
 * What a query's chunk objects take to arrive: a running estimate of delivery throughput (bytes over fetch time of
 * recent queries, all edges together). It starts low, so before any measurement a TTFT target picks smaller levels
 * rather than miss; each measured query moves it a share of the way to what that query saw.
 */
export class DeliveryEstimate {
  private bytesPerMs: number;

  constructor(
    private readonly options: {
      /** Throughput assumed before any query was measured. */
      seedBytesPerSecond: number;
      /** Share of the way each new measurement moves the estimate, in (0, 1]. */
      weight: number;
      /** Fetches smaller than this measure latency more than throughput, and are left out. */
      minBytes: number;
    } = DEFAULT_DELIVERY_OPTIONS,
  ) {
    this.bytesPerMs = options.seedBytesPerSecond / 1000;
  }

  /** One query's fetch: `bytes` received from the edges in `ms`. */
  record(bytes: number, ms: number): void {
    if (bytes < this.options.minBytes || !(ms > 0)) return;
    const { weight } = this.options;
    this.bytesPerMs = (1 - weight) * this.bytesPerMs + weight * (bytes / ms);
  }

  /** Milliseconds `bytes` of objects are expected to take to arrive. */
  expectedMs(bytes: number): number {
    return bytes / this.bytesPerMs;
  }

  get bytesPerSecond(): number {
    return this.bytesPerMs * 1000;
  }
}

/** 50 MB/s to start: slower than any edge on a local network, a fair guess for one across a WAN. */
export const DEFAULT_DELIVERY_OPTIONS = { seedBytesPerSecond: 50e6, weight: 0.3, minBytes: 64 * 1024 };
