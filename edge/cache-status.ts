import type { Found } from './tiered-cache.ts';

/**
 * The `Cache-Status` header (RFC 9211) every edge response to GET/HEAD /kv/<key> carries. The cache is named
 * `kdn-edge`; `detail` always names where the answer came from:
 *
 *   kdn-edge; hit; detail=memory                       served from the memory tier
 *   kdn-edge; hit; detail=disk                         served from the disk tier (now also in memory)
 *   kdn-edge; fwd=miss; stored; detail=origin          fetched from the origin, verified, stored in the tiers
 *   kdn-edge; fwd=miss; stored; collapsed; detail=origin   as above, sharing another request's origin fetch
 *   kdn-edge; hit; detail=negative                     404 remembered from a recent origin miss
 *   kdn-edge; fwd=miss; detail=not-found               404: the origin does not have the key
 *   kdn-edge; fwd=miss; detail=origin-corrupt          422: the origin's copy failed verification (not stored)
 *   kdn-edge; fwd=miss; detail=origin-unavailable      502: the origin failed or refused
 *   kdn-edge; fwd=miss; detail=origin-timeout          504: the origin did not answer in time
 */
export const CACHE_STATUS = {
  memory: 'kdn-edge; hit; detail=memory',
  disk: 'kdn-edge; hit; detail=disk',
  origin: 'kdn-edge; fwd=miss; stored; detail=origin',
  originCollapsed: 'kdn-edge; fwd=miss; stored; collapsed; detail=origin',
  negative: 'kdn-edge; hit; detail=negative',
  notFound: 'kdn-edge; fwd=miss; detail=not-found',
  originCorrupt: 'kdn-edge; fwd=miss; detail=origin-corrupt',
  originUnavailable: 'kdn-edge; fwd=miss; detail=origin-unavailable',
  originTimeout: 'kdn-edge; fwd=miss; detail=origin-timeout',
  /** Cache-Control: only-if-cached and no tier holds the object (504, RFC 9111 section 5.2.1.7). */
  notCached: 'kdn-edge; fwd=miss; detail=not-cached',
} as const;

export function cacheStatusFor(found: Found): string {
  if (found.tier === 'origin') return found.collapsed ? CACHE_STATUS.originCollapsed : CACHE_STATUS.origin;
  return CACHE_STATUS[found.tier];
}

/** Which tier a Cache-Status value names, for clients. */
export type ServedFrom = 'memory' | 'disk' | 'origin' | 'negative' | 'not-cached' | 'unknown';

export function parseCacheStatus(value: string | null | undefined): ServedFrom {
  const detail = value ? /(?:^|;)\s*detail=([a-z-]+)/.exec(value)?.[1] : undefined;
  switch (detail) {
    case 'memory': case 'disk': case 'origin': case 'negative': case 'not-cached': return detail;
    default: return 'unknown';
  }
}
