import { LRUCache } from 'lru-cache';
import { z } from 'zod';
import { KdnError } from './errors.ts';

/** Failed authentications allowed from one source address: `burst` at once, then `perSecond`. */
export interface FailedAuthLimit {
  perSecond: number;
  burst: number;
}

export const DEFAULT_FAILED_AUTH_LIMIT: FailedAuthLimit = { perSecond: 1, burst: 30 };

/** A limit written "<failures per second>[,<burst>]" (burst defaults to 30; "0" turns throttling off). */
export const failedAuthLimitSchema = z
  .union([z.string(), z.object({ perSecond: z.number().min(0), burst: z.number().min(1) })])
  .transform((value, ctx) => {
    if (typeof value !== 'string') return value;
    const match = /^\s*(\d+(?:\.\d+)?)\s*(?:,\s*(\d+)\s*)?$/.exec(value);
    if (!match || (match[2] !== undefined && Number(match[2]) < 1)) {
      ctx.addIssue({ code: 'custom', message: `"${value}" is not "<failures per second>[,<burst>]"` });
      return z.NEVER;
    }
    return { perSecond: Number(match[1]), burst: match[2] === undefined ? DEFAULT_FAILED_AUTH_LIMIT.burst : Number(match[2]) };
  });

interface Bucket {
  tokens: number;
  updatedAt: number;
}

/**
 * Throttles guessing: every failed authentication from a source address takes a token from that address's bucket,
 * and an address with none left is answered 429 before its credentials are even looked at. Succeeding costs
 * nothing, so clients with a valid key are never slowed. Buckets live in an LRU, so a flood of addresses cannot
 * grow it without bound (an address pushed out starts again with a full bucket).
 */
export class FailedAuthThrottle {
  private readonly buckets: LRUCache<string, Bucket>;

  constructor(
    private readonly limit: FailedAuthLimit = DEFAULT_FAILED_AUTH_LIMIT,
    maxSources = 100_000,
    private readonly now: () => number = () => performance.now(),
  ) {
    this.buckets = new LRUCache({ max: maxSources });
  }

  /** Throws RATE_LIMITED (with details.retryAfterS) when `source` has used up its failures. */
  check(source: string): void {
    if (this.limit.perSecond <= 0) return;
    const bucket = this.refill(source);
    if (bucket.tokens >= 1) return;
    const retryAfterS = Math.max(1, Math.ceil((1 - bucket.tokens) / this.limit.perSecond));
    throw new KdnError('RATE_LIMITED', 'too many failed authentications from this address', {
      hint: `wait ${retryAfterS} s (Retry-After) and check the key or token you send`,
      details: { retryAfterS },
    });
  }

  /** Records one failed authentication from `source`. */
  failed(source: string): void {
    if (this.limit.perSecond <= 0) return;
    const bucket = this.refill(source);
    bucket.tokens = Math.max(0, bucket.tokens - 1);
    this.buckets.set(source, bucket);
  }

  private refill(source: string): Bucket {
    const now = this.now();
    const bucket = this.buckets.get(source) ?? { tokens: this.limit.burst, updatedAt: now };
    bucket.tokens = Math.min(this.limit.burst, bucket.tokens + ((now - bucket.updatedAt) / 1000) * this.limit.perSecond);
    bucket.updatedAt = now;
    return bucket;
  }
}

/** The Retry-After header value for a RATE_LIMITED error from the throttle, if it is one. */
export function retryAfterOf(err: KdnError): string | undefined {
  const seconds = err.details?.['retryAfterS'];
  return err.code === 'RATE_LIMITED' && typeof seconds === 'number' ? String(seconds) : undefined;
}
