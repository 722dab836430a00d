import { KdnError } from '../common/errors.ts';
import type { ByteRange } from './object-store.ts';

/**
 * Checks a requested range before any I/O: bounds must be non-negative integers (INVALID_ARGUMENT otherwise) and
 * `end` may not precede `start` (RANGE_NOT_SATISFIABLE, since no object could satisfy it).
 */
export function checkRange(range: ByteRange): void {
  const { start, end } = range;
  if (!Number.isSafeInteger(start) || start < 0 || (end !== undefined && (!Number.isSafeInteger(end) || end < 0))) {
    throw new KdnError('INVALID_ARGUMENT', `byte range ${describeRange(range)} needs non-negative integer bounds`, {
      hint: 'ask for { start, end } with 0 <= start <= end, both inclusive byte offsets',
    });
  }
  if (end !== undefined && end < start) {
    throw new KdnError('RANGE_NOT_SATISFIABLE', `byte range ${describeRange(range)} ends before it starts`, {
      hint: 'ranges are inclusive: { start: 0, end: 9 } is the first 10 bytes',
    });
  }
}

/**
 * The inclusive range actually served from an object of `size` bytes, with HTTP semantics: an `end` past the last
 * byte is clamped, a `start` at or past the end (including any range of an empty object) is not satisfiable.
 */
export function resolveRange(range: ByteRange, size: number): { start: number; end: number } {
  checkRange(range);
  if (range.start >= size) {
    throw new KdnError('RANGE_NOT_SATISFIABLE', `byte range ${describeRange(range)} starts past the end of a ${size}-byte object`, {
      hint: 'head() the object first to learn its size',
      details: { size },
    });
  }
  return { start: range.start, end: Math.min(range.end ?? size - 1, size - 1) };
}

export function describeRange(range: ByteRange): string {
  return `${range.start}-${range.end ?? ''}`;
}
