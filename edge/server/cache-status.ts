import { isKdnError } from '../../common/errors.ts';
import { CACHE_STATUS } from '../protocol.ts';
import type { Found } from './tiered-cache.ts';

/** The Cache-Status (values in edge/protocol.ts) of an object one of the tiers found. */
export function cacheStatusFor(found: Found): string {
  if (found.tier === 'origin') return found.collapsed ? CACHE_STATUS.originCollapsed : CACHE_STATUS.origin;
  return CACHE_STATUS[found.tier];
}

/** The Cache-Status of a GET or HEAD that failed below the memory tier. */
export function cacheStatusForError(err: unknown): string {
  if (!isKdnError(err)) return CACHE_STATUS.originUnavailable;
  switch (err.code) {
    case 'NOT_FOUND':
      return err.details?.['negativeCache'] ? CACHE_STATUS.negative : CACHE_STATUS.notFound;
    case 'KV_CORRUPT':
      return CACHE_STATUS.originCorrupt;
    case 'ORIGIN_TIMEOUT':
      return CACHE_STATUS.originTimeout;
    default:
      return CACHE_STATUS.originUnavailable;
  }
}
