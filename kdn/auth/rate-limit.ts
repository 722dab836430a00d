import type { RateLimit } from '../config.ts';

interface Bucket {
  tokens: number;
  updatedAt: number;
}

/**
 * A token bucket per API key: each key may make `burst` requests at once and `perSecond` on average. Buckets exist
 * only for configured keys (unauthenticated requests are refused before they get here), so the map stays small.
 */
export class RateLimiter {
  private readonly buckets = new Map<string, Bucket>();

  constructor(
    private readonly limit: RateLimit,
    private readonly now: () => number = () => performance.now(),
  ) {}

  /** Takes one request's token; returns 0 when allowed, else the seconds until a token is free. */
  take(id: string): number {
    if (this.limit.perSecond <= 0) return 0;
    const now = this.now();
    const bucket = this.buckets.get(id) ?? { tokens: this.limit.burst, updatedAt: now };
    bucket.tokens = Math.min(this.limit.burst, bucket.tokens + ((now - bucket.updatedAt) / 1000) * this.limit.perSecond);
    bucket.updatedAt = now;
    this.buckets.set(id, bucket);
    if (bucket.tokens >= 1) {
      bucket.tokens -= 1;
      return 0;
    }
    return (1 - bucket.tokens) / this.limit.perSecond;
  }
}
