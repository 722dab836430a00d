import type { OriginCounters } from './origin.ts';
import type { TieredCache } from './tiered-cache.ts';

/** What the HTTP layer counts; the tiers count their own hits and misses. */
export interface ServeCounters {
  requests: number;
  /** Body bytes of GET responses (200 and 206) handed to clients. */
  bytesServed: number;
  notModified: number;
  partial: number;
  puts: number;
  deletes: number;
  errors: number;
  /** Requests refused for a missing, expired or wrong token (also counted in errors). */
  unauthorized: number;
}

export function newServeCounters(): ServeCounters {
  return { requests: 0, bytesServed: 0, notModified: 0, partial: 0, puts: 0, deletes: 0, errors: 0, unauthorized: 0 };
}

/** The JSON of GET /stats. */
export interface EdgeStats {
  uptimeSeconds: number;
  memory: { hits: number; misses: number; objects: number; bytes: number; budgetBytes: number; evictions: number };
  disk: {
    hits: number; misses: number; objects: number; bytes: number; budgetBytes: number; evictions: number;
    corruptDropped: number; writeErrors: number; path: string;
  };
  origin: OriginCounters & { collapsed: number; description: string };
  served: ServeCounters;
}

export function edgeStats(cache: TieredCache, served: ServeCounters, startedAt: number): EdgeStats {
  const { counters, memory, disk, origin } = cache;
  return {
    uptimeSeconds: Math.round((Date.now() - startedAt) / 1000),
    memory: {
      hits: counters.memoryHits, misses: counters.memoryMisses, objects: memory.objects, bytes: memory.bytes,
      budgetBytes: memory.budgetBytes, evictions: memory.evictions,
    },
    disk: {
      hits: counters.diskHits, misses: counters.diskMisses, objects: disk.objects, bytes: disk.bytes,
      budgetBytes: disk.budgetBytes, evictions: disk.evictions, corruptDropped: disk.corruptDropped,
      writeErrors: counters.diskWriteErrors, path: disk.dir,
    },
    origin: { ...origin.counters, collapsed: counters.collapsed, description: origin.store.description },
    served: { ...served },
  };
}
