/**
 * What a query's chunk objects take to arrive: a running estimate of delivery throughput per edge (bytes received
 * from it over the query's fetch time), with one over all edges for an edge not measured yet. It starts low, so
 * before any measurement a TTFT target picks smaller levels rather than miss; each measured query moves the figures
 * a share of the way to what that query saw.
 *
 * Small fetches measure per-request latency more than throughput, so left alone the estimate locks itself low: a low
 * figure picks the smallest level, whose fetches measure low again. Two rules keep it honest:
 *   - a fetch smaller than `sampleBytes` may raise a figure but never lower it (its low rate is mostly latency);
 *   - after `probeAfter` queries in a row without a fetch that large, the next query is due a probe: the level
 *     policy picks one level above what fits (kdn/query/level-policy.ts), a larger sample whose rate replaces the
 *     figures, which may be stale by then (the link may have changed while only small fetches were measured). A link
 *     that is really slow costs one query in `probeAfter` a fetch one level too large.
 */
export class DeliveryEstimate {
  private readonly overall: Rate;
  private readonly edges = new Map<string, Rate>();
  private sinceSample = 0;

  constructor(private readonly options: DeliveryOptions = DEFAULT_DELIVERY_OPTIONS) {
    this.overall = { bytesPerMs: options.seedBytesPerSecond / 1000 };
  }

  /** One query's fetch: `fetched` bytes received from each edge, all within `ms`; `probe`: it was a probe's. */
  record(fetched: readonly { edge: string; bytes: number }[], ms: number, probe = false): void {
    if (!(ms > 0)) return;
    const byEdge = new Map<string, number>();
    for (const { edge, bytes } of fetched) byEdge.set(edge, (byEdge.get(edge) ?? 0) + bytes);
    const total = [...byEdge.values()].reduce((n, b) => n + b, 0);
    if (total < this.options.minBytes) return;
    this.sinceSample = total >= this.options.sampleBytes ? 0 : this.sinceSample + 1;
    this.update(this.overall, total, ms, probe);
    for (const [edge, bytes] of byEdge) {
      const rate = this.edges.get(edge) ?? { bytesPerMs: this.overall.bytesPerMs };
      this.edges.set(edge, rate);
      // Each edge's bytes arrived within the query's fetch time: a lower bound on that edge's own rate.
      this.update(rate, bytes, ms, probe);
    }
  }

  /** Milliseconds `bytes` from `edge` (absent: any edge) are expected to take to arrive. */
  expectedMs(bytes: number, edge?: string): number {
    return bytes / this.rateOf(edge);
  }

  /** Throughput expected from `edge`, or over all edges for an edge not measured yet (or none named). */
  bytesPerSecond(edge?: string): number {
    return this.rateOf(edge) * 1000;
  }

  /** Whether the next query should fetch one level larger than fits, to sample the throughput (see the class). */
  get probeDue(): boolean {
    return this.sinceSample >= this.options.probeAfter;
  }

  /** A probe was sent: the next is due after `probeAfter` more queries without a large sample. */
  probed(): void {
    this.sinceSample = 0;
  }

  private rateOf(edge: string | undefined): number {
    return (edge === undefined ? undefined : this.edges.get(edge)?.bytesPerMs) ?? this.overall.bytesPerMs;
  }

  private update(rate: Rate, bytes: number, ms: number, probe: boolean): void {
    const seen = bytes / ms;
    if (seen < rate.bytesPerMs && bytes < this.options.sampleBytes) return;
    const weight = probe ? 1 : this.options.weight;
    rate.bytesPerMs = (1 - weight) * rate.bytesPerMs + weight * seen;
  }
}

interface Rate {
  bytesPerMs: number;
}

export interface DeliveryOptions {
  /** Throughput assumed before any query was measured. */
  seedBytesPerSecond: number;
  /** Share of the way each new measurement moves the estimate, in (0, 1]. */
  weight: number;
  /** Fetches smaller than this are left out: nearly all latency. */
  minBytes: number;
  /** Fetches at least this large measure throughput: only they may lower the estimate. */
  sampleBytes: number;
  /** Queries in a row without a fetch of `sampleBytes` after which a probe is due. */
  probeAfter: number;
}

/**
 * 50 MB/s to start: slower than any edge on a local network, a fair guess for one across a WAN. A 1 MiB fetch spends
 * under a tenth of its time on a few milliseconds of request latency up to about 25 MB/s.
 */
export const DEFAULT_DELIVERY_OPTIONS: DeliveryOptions = {
  seedBytesPerSecond: 50e6,
  weight: 0.3,
  minBytes: 64 * 1024,
  sampleBytes: 1024 * 1024,
  probeAfter: 8,
};
