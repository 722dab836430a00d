/** Argument parsing shared by the benchmarks: typed values from `node:util` parseArgs strings, with KdnErrors. */
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { KdnError } from '../../common/errors.ts';
import { KV_FORMAT_VERSION, KV_READABLE_VERSIONS, type LayerDigestVersion } from '../../storage/kv-object/index.ts';

function bad(name: string, message: string, hint?: string): KdnError {
  return new KdnError('INVALID_ARGUMENT', `--${name} ${message}`, hint ? { hint } : {});
}

export function positiveInt(value: string | undefined, fallback: number, name: string): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw bad(name, `must be a positive integer, got "${value}"`);
  return n;
}

/** Seconds as a positive number; `fallback` (e.g. Infinity) when absent. */
export function positiveSeconds(value: string | undefined, fallback: number, name: string): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isFinite(n) || n <= 0) throw bad(name, `must be a positive number of seconds, got "${value}"`);
  return n;
}

/** A comma-separated list of positive integers, e.g. "1024,4096". */
export function intList(value: string | undefined, fallback: number[], name: string): number[] {
  if (value === undefined) return fallback;
  const items = value
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
  if (items.length === 0) throw bad(name, 'needs at least one value');
  return items.map((s) => positiveInt(s, 0, name));
}

/** One of `choices`. */
export function choice<T extends string>(value: string | undefined, fallback: T, choices: readonly T[], name: string): T {
  if (value === undefined) return fallback;
  if (!(choices as readonly string[]).includes(value)) throw bad(name, `must be one of ${choices.join(', ')}, got "${value}"`);
  return value as T;
}

/** A comma-separated subset of `choices`, in the order given, without repeats. */
export function choiceList<T extends string>(value: string | undefined, fallback: readonly T[], choices: readonly T[], name: string): T[] {
  if (value === undefined) return [...fallback];
  const items = [
    ...new Set(
      value
        .split(',')
        .map((s) => s.trim())
        .filter((s) => s !== ''),
    ),
  ];
  if (items.length === 0) throw bad(name, 'needs at least one value');
  return items.map((s) => choice(s, s as T, choices, name));
}

/** KV format versions this build reads, comma-separated (`--format-versions`); the version encoders write by default. */
export function formatVersions(value: string | undefined, name = 'format-versions'): LayerDigestVersion[] {
  return choiceList(value, [String(KV_FORMAT_VERSION)], KV_READABLE_VERSIONS.map(String), name).map(Number) as LayerDigestVersion[];
}

/** One KV format version this build reads (`--format-version`); the version encoders write by default. */
export function formatVersion(value: string | undefined, name = 'format-version'): LayerDigestVersion {
  return Number(choice(value, String(KV_FORMAT_VERSION), KV_READABLE_VERSIONS.map(String), name)) as LayerDigestVersion;
}

/** node:util parseArgs (strict), with an unknown or malformed flag as INVALID_ARGUMENT. */
export function parseFlags<const T extends NonNullable<ParseArgsConfig['options']>>(args: string[], options: T) {
  try {
    return parseArgs({ args, options, allowPositionals: false }).values;
  } catch (err) {
    throw new KdnError('INVALID_ARGUMENT', (err as Error).message, { hint: 'see the usage at the top of the benchmark file' });
  }
}
