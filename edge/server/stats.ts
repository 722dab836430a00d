import type { EdgeStats } from '../protocol.ts';
import type { ShmMirror } from './shm-mirror.ts';
import type { TieredCache } from './tiered-cache.ts';

/** What the HTTP layer counts (the `served` part of /stats); the tiers count their own hits and misses. */
export type ServeCounters = EdgeStats['served'];

export function newServeCounters(): ServeCounters {
  return { requests: 0, bytesServed: 0, notModified: 0, partial: 0, puts: 0, deletes: 0, errors: 0, unauthorized: 0 };
}

export function edgeStats(cache: TieredCache, served: ServeCounters, startedAt: number, shm?: ShmMirror): EdgeStats {
  const { counters, memory, disk, origin } = cache;
  return {
    uptimeSeconds: Math.round((Date.now() - startedAt) / 1000),
    memory: {
      hits: counters.memoryHits,
      misses: counters.memoryMisses,
      objects: memory.objects,
      bytes: memory.bytes,
      heapBytes: memory.heapBytes,
      budgetBytes: memory.budgetBytes,
      evictions: memory.evictions,
    },
    disk: {
      hits: counters.diskHits,
      misses: counters.diskMisses,
      objects: disk.objects,
      bytes: disk.bytes,
      budgetBytes: disk.budgetBytes,
      evictions: disk.evictions,
      corruptDropped: disk.corruptDropped,
      writeErrors: counters.diskWriteErrors,
      path: disk.dir,
    },
    origin: { ...origin.counters, collapsed: counters.collapsed, description: origin.store.description },
    ...(shm ? { shm: { dir: shm.dir, ...shm.counters } } : {}),
    served: { ...served },
  };
}
