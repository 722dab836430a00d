import { z } from 'zod';
import { KdnError } from './errors.ts';

const UNITS: Record<string, number> = {
  '': 1,
  b: 1,
  k: 1e3,
  kb: 1e3,
  m: 1e6,
  mb: 1e6,
  g: 1e9,
  gb: 1e9,
  t: 1e12,
  tb: 1e12,
  kib: 2 ** 10,
  mib: 2 ** 20,
  gib: 2 ** 30,
  tib: 2 ** 40,
};

/** Parses byte sizes like "512MiB", "4GiB", "1.5GB", "1048576" (decimal units are powers of 10, *iB of 2). */
export function parseSize(text: string | number): number {
  if (typeof text === 'number') {
    if (Number.isSafeInteger(text) && text >= 0) return text;
    throw sizeError(String(text));
  }
  const match = /^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$/.exec(text);
  const factor = match ? UNITS[match[2]!.toLowerCase()] : undefined;
  if (!match || factor === undefined) throw sizeError(text);
  const bytes = Math.floor(Number(match[1]) * factor);
  if (!Number.isSafeInteger(bytes)) throw sizeError(text);
  return bytes;
}

function sizeError(text: string): KdnError {
  return new KdnError('INVALID_ARGUMENT', `"${text}" is not a byte size`, {
    hint: 'write sizes like 1048576, 512MiB, 4GiB or 1.5GB',
  });
}

/** A zod schema for a byte size given as a number or a string parseSize accepts. */
export const byteSize = z.union([z.number(), z.string()]).transform((value, ctx) => {
  try {
    return parseSize(value);
  } catch (err) {
    ctx.addIssue({ code: 'custom', message: (err as Error).message });
    return z.NEVER;
  }
});
