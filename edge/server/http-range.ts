/** An inclusive byte range within an object of known size. */
export interface SatisfiableRange {
  start: number;
  end: number;
}

/**
 * Interprets a `Range` header for an object of `size` bytes (RFC 9110 14.2). Returns the range, 'unsatisfiable'
 * (answer 416), or null when the header is to be ignored and the whole object sent: a malformed header, a unit other
 * than bytes, or several ranges (multipart/byteranges is not worth its cost for KV objects, and ignoring is allowed).
 */
export function parseRange(header: string, size: number): SatisfiableRange | 'unsatisfiable' | null {
  const match = /^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$/i.exec(header);
  if (!match) return null;
  const [, first, last] = match as unknown as [string, string, string];
  if (first === '' && last === '') return null;
  if (first === '') {
    const suffix = Number(last);
    if (suffix === 0 || size === 0) return 'unsatisfiable';
    return { start: Math.max(0, size - suffix), end: size - 1 };
  }
  const start = Number(first);
  const end = last === '' ? Infinity : Number(last);
  if (end < start) return null;
  if (start >= size) return 'unsatisfiable';
  return { start, end: Math.min(end, size - 1) };
}

/** Whether an If-None-Match header matches `etag` (weak comparison, as RFC 9110 13.1.2 asks). */
export function noneMatch(header: string, etag: string): boolean {
  if (header.trim() === '*') return true;
  const bare = etag.replace(/^W\//, '');
  return header.split(',').some((candidate) => candidate.trim().replace(/^W\//, '') === bare);
}

/** Whether a Range applies under If-Range: only when it names the current strong ETag (dates never match). */
export function ifRangeHolds(header: string | undefined, etag: string): boolean {
  return header === undefined || header.trim() === etag;
}
