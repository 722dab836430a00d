import { LRUCache } from 'lru-cache';
import { KdnError, isKdnError } from '../../common/errors.ts';
import type { ObjectStore } from '../../storage/object-store.ts';
import { verifyKVObject } from '../../storage/kv-object/index.ts';
import { etagFor, type CachedObject } from './cached-object.ts';

export interface OriginOptions {
  /** Bound on one origin request (a PUT gets more time per byte, see put()). */
  timeoutMs: number;
  /** How long a NOT_FOUND is remembered; 0 turns negative caching off. */
  negativeTtlMs: number;
}

export interface OriginCounters {
  fetches: number;
  found: number;
  notFound: number;
  negativeHits: number;
  corrupt: number;
  errors: number;
  timeouts: number;
  bytes: number;
}

/** Most keys remembered as missing at once; the TTL keeps the set small in practice. */
const NEGATIVE_ENTRIES = 100_000;
/** A PUT of a large body gets one extra timeout per this many bytes. */
const PUT_BYTES_PER_TIMEOUT = 64 * 2 ** 20;

/**
 * The origin as an edge sees it: an ObjectStore behind a bounded timeout, with every fetched object verified before
 * anyone caches or serves it, misses remembered for a short time, and failures mapped to the edge's error codes
 * (ORIGIN_TIMEOUT 504, ORIGIN_UNAVAILABLE 502, NOT_FOUND 404, KV_CORRUPT 422 for a corrupt origin copy).
 */
export class Origin {
  readonly store: ObjectStore;
  readonly counters: OriginCounters = { fetches: 0, found: 0, notFound: 0, negativeHits: 0, corrupt: 0, errors: 0, timeouts: 0, bytes: 0 };
  private readonly options: OriginOptions;
  private readonly missing: LRUCache<string, true> | null;

  constructor(store: ObjectStore, options: OriginOptions) {
    this.store = store;
    this.options = options;
    this.missing = options.negativeTtlMs > 0 ? new LRUCache<string, true>({ max: NEGATIVE_ENTRIES, ttl: options.negativeTtlMs }) : null;
  }

  /** Fetches and verifies `key`. Callers coalesce concurrent fetches of one key (see TieredCache). */
  async fetch(key: string): Promise<CachedObject> {
    if (this.missing?.get(key)) {
      this.counters.negativeHits += 1;
      throw notFound(key, true);
    }
    this.counters.fetches += 1;
    let body: Buffer;
    try {
      body = await this.bounded(`fetching ${key}`, this.options.timeoutMs, (signal) => this.store.get(key, { signal }));
    } catch (err) {
      if (isKdnError(err, 'NOT_FOUND')) {
        this.counters.notFound += 1;
        this.missing?.set(key, true);
        throw notFound(key, false);
      }
      throw err;
    }
    let etag: string;
    try {
      etag = etagFor(verifyKVObject(body));
    } catch (err) {
      if (!isKdnError(err)) throw err;
      this.counters.corrupt += 1;
      throw new KdnError('KV_CORRUPT', `the origin's copy of ${key} failed verification: ${err.message}`, {
        hint: 'the edge did not cache or serve it; store the object again (PUT) to repair the origin',
        details: { source: 'origin', reason: err.code },
        cause: err,
      });
    }
    this.counters.found += 1;
    this.counters.bytes += body.length;
    return { body, etag };
  }

  async put(key: string, body: Buffer): Promise<void> {
    const timeoutMs = this.options.timeoutMs * (1 + Math.floor(body.length / PUT_BYTES_PER_TIMEOUT));
    await this.bounded(`storing ${key}`, timeoutMs, (signal) => this.store.put(key, body, { contentLength: body.length, signal }));
    this.missing?.delete(key);
  }

  async delete(key: string): Promise<boolean> {
    return this.bounded(`deleting ${key}`, this.options.timeoutMs, () => this.store.delete(key));
  }

  /** Forgets that `key` was missing (it was just stored through this edge). */
  forgetMissing(key: string): void {
    this.missing?.delete(key);
  }

  /**
   * Runs one origin call under a deadline. The signal asks the store to stop; the race makes sure the edge answers
   * in time even if the store ignores it.
   */
  private async bounded<T>(what: string, timeoutMs: number, call: (signal: AbortSignal) => Promise<T>): Promise<T> {
    const controller = new AbortController();
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<never>((_resolve, reject) => {
      timer = setTimeout(() => {
        controller.abort();
        reject(
          new KdnError('ORIGIN_TIMEOUT', `origin did not answer within ${timeoutMs} ms ${what}`, {
            hint: `check the origin (${this.store.description}); the edge still serves what it holds`,
          }),
        );
      }, timeoutMs);
    });
    try {
      return await Promise.race([call(controller.signal), deadline]);
    } catch (err) {
      if (isKdnError(err, 'NOT_FOUND') || isKdnError(err, 'INVALID_KEY')) throw err;
      if (isKdnError(err, 'ORIGIN_TIMEOUT') || controller.signal.aborted) {
        this.counters.timeouts += 1;
        throw isKdnError(err, 'ORIGIN_TIMEOUT') ? err : new KdnError('ORIGIN_TIMEOUT', `origin timed out ${what}`, { cause: err });
      }
      this.counters.errors += 1;
      if (isKdnError(err, 'ORIGIN_UNAVAILABLE')) throw err;
      throw new KdnError('ORIGIN_UNAVAILABLE', `origin failed ${what}: ${(err as Error).message}`, {
        hint: `check the origin (${this.store.description}); the edge still serves what it holds`,
        cause: err,
      });
    } finally {
      clearTimeout(timer);
    }
  }
}

function notFound(key: string, remembered: boolean): KdnError {
  if (!remembered) return new KdnError('NOT_FOUND', `no object ${key} at the origin`, { hint: 'PUT the object to store it' });
  return new KdnError('NOT_FOUND', `no object ${key} at the origin (remembered from a recent miss)`, {
    hint: 'misses are remembered for --negative-ttl; a PUT through this edge clears it',
    details: { negativeCache: true },
  });
}
