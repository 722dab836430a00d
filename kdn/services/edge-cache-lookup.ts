import type { EdgeClient } from '../../edge/client/client.ts';

/** HEADs to edges at a time when a document's detail asks where its objects are cached. */
const CACHE_LOOKUP_CONCURRENCY = 8;

/** Where an object's owner edge holds it; tier null when no tier does (the lookup never fills the edge). */
export interface CachedAt {
  edge: string | null;
  tier: 'memory' | 'disk' | null;
}

/** An edge that could not say. */
export interface EdgeError {
  error: string;
}

/**
 * Asks the owner edge of each key, only-if-cached, which tier holds it; a few at a time, so a document of
 * thousands of chunks neither waits on them one by one nor opens thousands of requests at once. An edge that
 * cannot answer is reported per key, not thrown: the rest of the answer is still worth having.
 */
export async function lookUpCachedAt(edges: EdgeClient, keys: readonly string[]): Promise<Map<string, CachedAt | EdgeError>> {
  const where = new Map<string, CachedAt | EdgeError>();
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(CACHE_LOOKUP_CONCURRENCY, keys.length) }, async () => {
      while (next < keys.length) {
        const key = keys[next++]!;
        try {
          where.set(key, (await edges.cachedAt(key)) ?? { edge: null, tier: null });
        } catch (err) {
          where.set(key, { error: (err as Error).message });
        }
      }
    }),
  );
  return where;
}
