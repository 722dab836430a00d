import { isKdnError } from '../../common/errors.ts';
import type { Logger } from '../../common/log.ts';
import { verifyKVObject } from '../../storage/kv-object/index.ts';
import { etagFor, type CachedObject } from './cached-object.ts';
import type { DiskTier } from './disk-tier.ts';
import type { MemoryObject, MemoryTier } from './memory-tier.ts';
import type { Origin } from './origin.ts';

export type Tier = 'memory' | 'disk' | 'origin';

export interface Found {
  object: CachedObject;
  tier: Tier;
  /** This request waited on another request's lookup instead of starting its own (RFC 9211 `collapsed`). */
  collapsed: boolean;
}

export interface TierCounters {
  memoryHits: number;
  memoryMisses: number;
  diskHits: number;
  diskMisses: number;
  diskWriteErrors: number;
  /** Requests that joined a lookup already in flight for their key. */
  collapsed: number;
}

/** Set when a PUT or DELETE of the key overtakes a lookup: what the lookup finds must then not be stored. */
interface Overtaken {
  stale: boolean;
}

/** One lookup below the memory tier, shared by every request for its key while it runs. */
interface Flight {
  promise: Promise<{ object: CachedObject; tier: Tier }>;
  overtaken: Overtaken;
}

export type WarmOutcome = { status: 'present' | 'warmed'; bytes: number };

/**
 * Memory over disk over origin. A miss in one tier fills the tiers above it. Concurrent misses of one key share a
 * single lookup below memory (disk read, else origin fetch and fill), so N concurrent misses cost one origin GET; the
 * fill finishes before the lookup settles, so a request arriving just after finds the object in a tier.
 */
export class TieredCache {
  readonly memory: MemoryTier;
  readonly disk: DiskTier;
  readonly origin: Origin;
  readonly counters: TierCounters = { memoryHits: 0, memoryMisses: 0, diskHits: 0, diskMisses: 0, diskWriteErrors: 0, collapsed: 0 };
  private readonly flights = new Map<string, Flight>();
  private readonly log: Logger;

  constructor(tiers: { memory: MemoryTier; disk: DiskTier; origin: Origin }, log: Logger) {
    this.memory = tiers.memory;
    this.disk = tiers.disk;
    this.origin = tiers.origin;
    this.log = log;
  }

  /** The synchronous hot path: a memory hit, counted, or undefined. */
  fromMemory(key: string): MemoryObject | undefined {
    const object = this.memory.get(key);
    if (object) this.counters.memoryHits += 1;
    return object;
  }

  /** The tier that holds `key` now, without reading it or asking the origin (Cache-Control: only-if-cached). */
  holder(key: string): 'memory' | 'disk' | null {
    if (this.memory.has(key)) return 'memory';
    return this.disk.has(key) ? 'disk' : null;
  }

  /** Looks below memory after fromMemory missed. Throws NOT_FOUND, ORIGIN_*, or KV_CORRUPT for a corrupt origin copy. */
  async belowMemory(key: string): Promise<Found> {
    this.counters.memoryMisses += 1;
    const running = this.flights.get(key);
    if (running) {
      this.counters.collapsed += 1;
      return { ...(await running.promise), collapsed: true };
    }
    const overtaken: Overtaken = { stale: false };
    const flight: Flight = {
      overtaken,
      promise: this.lookup(key, overtaken).finally(() => {
        if (this.flights.get(key) === flight) this.flights.delete(key);
      }),
    };
    this.flights.set(key, flight);
    return { ...(await flight.promise), collapsed: false };
  }

  /** Verifies `body`, writes it through to the origin, then keeps it in both tiers. Nothing is kept if any step fails. */
  async put(key: string, body: Buffer): Promise<CachedObject> {
    const object: CachedObject = { body, etag: etagFor(verifyKVObject(body)) };
    await this.origin.put(key, body);
    this.overtakeFlight(key);
    await this.fill(key, object);
    return object;
  }

  /** Purges `key` from this edge's tiers and, with `origin`, from the origin too. */
  async delete(key: string, options: { origin: boolean }): Promise<{ memory: boolean; disk: boolean; origin?: boolean }> {
    this.overtakeFlight(key);
    const memory = this.memory.delete(key);
    const disk = await this.disk.delete(key);
    if (!options.origin) return { memory, disk };
    return { memory, disk, origin: await this.origin.delete(key) };
  }

  /** Brings `key` into the edge unless a tier already holds it. */
  async warm(key: string): Promise<WarmOutcome> {
    const inMemory = this.memory.get(key);
    if (inMemory) return { status: 'present', bytes: inMemory.size };
    const found = await this.belowMemory(key);
    return { status: found.tier === 'origin' ? 'warmed' : 'present', bytes: found.object.body.length };
  }

  private async lookup(key: string, overtaken: Overtaken): Promise<{ object: CachedObject; tier: Tier }> {
    const onDisk = await this.disk.read(key);
    if (onDisk) {
      this.counters.diskHits += 1;
      if (!overtaken.stale) this.memory.set(key, onDisk);
      return { object: onDisk, tier: 'disk' };
    }
    this.counters.diskMisses += 1;
    const object = await this.origin.fetch(key);
    if (!overtaken.stale) await this.fill(key, object);
    return { object, tier: 'origin' };
  }

  /** Keeps a verified object in memory and on disk; a failing disk is logged and counted, not fatal to the request. */
  private async fill(key: string, object: CachedObject): Promise<void> {
    this.memory.set(key, object);
    try {
      await this.disk.write(key, object.body);
    } catch (err) {
      if (!isKdnError(err)) throw err;
      this.counters.diskWriteErrors += 1;
      this.log.warn({ key, err: err.message }, 'edge disk tier write failed');
    }
  }

  /** A lookup already running for `key` must not store what it found: a newer PUT or DELETE decided the content. */
  private overtakeFlight(key: string): void {
    const flight = this.flights.get(key);
    if (!flight) return;
    flight.overtaken.stale = true;
    this.flights.delete(key);
  }
}
