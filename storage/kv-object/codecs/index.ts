import { KdnError } from '../../../common/errors.ts';
import type { CodecName, CodecSpec } from '../types.ts';
import type { LayerCodec } from './codec.ts';
import { fp16Codec } from './fp16.ts';
import { int4Codec } from './int4.ts';
import { int8Codec } from './int8.ts';
import { TransformCodec } from './transform.ts';
import { DEFAULT_TRANSFORM_LEVEL, TRANSFORM_LEVELS } from './transform-fit.ts';
import { TABLE_LIMITS, type TransformTable } from './transform-table.ts';
import { transformTables } from './transform-tables.ts';

export type { LayerCodec, LayerShape } from './codec.ts';

export const DEFAULT_GROUP_SIZE = 32;
export const MAX_GROUP_SIZE = 4096;

/** What an object's header says about the tensors, for codecs whose parameters belong to one model. */
export interface CodecContext {
  modelFingerprint: string;
  layers: number;
  kvHeads: number;
  headDim: number;
}

/**
 * One codec of the registry. Adding a codec is one entry here (and one name in CodecName); everything else
 * (header validation, encode, decode, CLI parsing) goes through these.
 */
export interface CodecEntry {
  /** Spec fields besides name and lz4 that the codec takes; any other field in a header is corruption. */
  readonly fields: readonly (keyof CodecSpec)[];
  /** Keys must be stored before RoPE (ropeApplied: false): the codec's transform assumes unrotated keys. */
  readonly keysBeforeRope: boolean;
  /** Checks the codec's own fields (present, typed, in range); KV_UNSUPPORTED when they are wrong. */
  check(spec: CodecSpec): void;
  /** Whether this process can bind the spec now (a transform table must be registered first). */
  available(spec: CodecSpec): boolean;
  /** The codec bound to the spec's parameters; KV_UNSUPPORTED when it is not available. */
  bind(spec: CodecSpec): LayerCodec;
  /** Checks a header's model and shape against what the bound codec is for (KV_MISMATCH). */
  checkContext(spec: CodecSpec, context: CodecContext): void;
  /** The spec for "name[:option]" from a CLI or config string, with `groupSize` as the configured default. */
  fromString(option: string | undefined, lz4: boolean, groupSize: number): CodecSpec;
}

function unsupported(message: string, hint?: string): KdnError {
  return new KdnError('KV_UNSUPPORTED', message, hint === undefined ? {} : { hint });
}

function noOption(name: string, option: string | undefined): void {
  if (option !== undefined)
    throw new KdnError('INVALID_ARGUMENT', `codec ${name} takes no ":${option}"`, { hint: 'only transform takes a level' });
}

function checkGroupSize(groupSize: number | undefined): number {
  if (groupSize === undefined || !Number.isInteger(groupSize) || groupSize < 1 || groupSize > MAX_GROUP_SIZE) {
    throw unsupported(`groupSize must be an integer in 1..${MAX_GROUP_SIZE}, got ${String(groupSize)}`);
  }
  return groupSize;
}

function quantizedEntry(name: 'int8' | 'int4', make: (groupSize: number) => LayerCodec): CodecEntry {
  return {
    fields: ['groupSize'],
    keysBeforeRope: false,
    check: (spec) => void checkGroupSize(spec.groupSize),
    available: () => true,
    bind: (spec) => make(checkGroupSize(spec.groupSize)),
    checkContext: () => {},
    fromString: (option, lz4, groupSize) => {
      noOption(name, option);
      return { name, lz4, groupSize };
    },
  };
}

const fp16Entry: CodecEntry = {
  fields: [],
  keysBeforeRope: false,
  check: () => {},
  available: () => true,
  bind: () => fp16Codec,
  checkContext: () => {},
  fromString: (option, lz4) => {
    noOption('fp16', option);
    return { name: 'fp16', lz4 };
  },
};

export const CODECS: Readonly<Record<CodecName, CodecEntry>> = {
  fp16: fp16Entry,
  int8: quantizedEntry('int8', int8Codec),
  int4: quantizedEntry('int4', int4Codec),
  transform: transformEntry(),
};

/** The registry entry of a spec's codec; an unknown name is KV_UNSUPPORTED. */
export function codecEntry(name: unknown): CodecEntry {
  const entry = typeof name === 'string' && Object.hasOwn(CODECS, name) ? CODECS[name as CodecName] : undefined;
  if (!entry) {
    throw unsupported(`unknown codec ${JSON.stringify(name)}`, `codecs are ${Object.keys(CODECS).join(', ')}`);
  }
  return entry;
}

/** The codec a spec names, bound to its parameters; an unknown name or bad parameters are KV_UNSUPPORTED. */
export function codecFor(spec: CodecSpec): LayerCodec {
  const entry = codecEntry(spec.name);
  entry.check(spec);
  return entry.bind(spec);
}

function transformEntry(): CodecEntry {
  // Bound codecs cache their per-layer quantizers; keyed by the table object so a forgotten table is never used.
  const bound = new WeakMap<TransformTable, Map<number, TransformCodec>>();
  const check = (spec: CodecSpec): void => {
    if (spec.lz4) throw unsupported('transform takes no lz4 framing', 'its packed codes do not compress; drop +lz4');
    if (typeof spec.table !== 'string' || !/^[0-9a-f]{64}$/.test(spec.table)) {
      throw unsupported("transform codec needs table: the table's sha256 as 64 lowercase hex digits");
    }
    const level = spec.level;
    if (typeof level !== 'number' || !Number.isInteger(level) || level < 0 || level >= TABLE_LIMITS.levels) {
      throw unsupported(`transform level must be an integer in 0..${TABLE_LIMITS.levels - 1}, got ${String(level)}`);
    }
  };
  return {
    fields: ['table', 'level'],
    keysBeforeRope: true,
    check,
    available: (spec) => transformTables.find(spec.table ?? '') !== undefined,
    bind(spec) {
      check(spec);
      const table = transformTables.get(spec.table!);
      let levels = bound.get(table);
      if (!levels) bound.set(table, (levels = new Map()));
      let codec = levels.get(spec.level!);
      if (!codec) levels.set(spec.level!, (codec = new TransformCodec(table, spec.level!)));
      return codec;
    },
    checkContext(spec, context) {
      const table = transformTables.get(spec.table!);
      if (table.modelFingerprint !== context.modelFingerprint) {
        throw new KdnError('KV_MISMATCH', 'transform table was fitted for another model', {
          hint: 'the object and its table disagree on the model fingerprint; re-encode the object',
          details: { table: table.modelFingerprint, object: context.modelFingerprint },
        });
      }
      if (table.layers !== context.layers || table.kvHeads !== context.kvHeads || table.headDim !== context.headDim) {
        throw new KdnError(
          'KV_MISMATCH',
          `transform table shape ${table.layers}x${table.kvHeads}x${table.headDim} does not match the object's ${context.layers}x${context.kvHeads}x${context.headDim}`,
        );
      }
      if (spec.level! >= table.levels.length)
        throw unsupported(`transform table has ${table.levels.length} levels, the object uses level ${spec.level}`);
    },
    fromString: (option, lz4) => transformSpecFromString(option, lz4),
  };
}

/** Level names this build fits, so configs can say transform:x8; an index works too. */
const TRANSFORM_LEVEL_NAMES = TRANSFORM_LEVELS.map((l) => l.name);

function transformSpecFromString(option: string | undefined, lz4: boolean): CodecSpec {
  if (lz4) throw new KdnError('INVALID_ARGUMENT', 'transform takes no +lz4', { hint: 'use transform or transform:<level>' });
  const text = option ?? TRANSFORM_LEVEL_NAMES[DEFAULT_TRANSFORM_LEVEL]!;
  const level = /^\d+$/.test(text) ? Number(text) : TRANSFORM_LEVEL_NAMES.indexOf(text);
  if (!(level >= 0 && level < TRANSFORM_LEVEL_NAMES.length)) {
    throw new KdnError('INVALID_ARGUMENT', `unknown transform level "${text}"`, {
      hint: `levels are ${TRANSFORM_LEVEL_NAMES.join(', ')} (about that many times smaller than fp16) or their index 0..${TRANSFORM_LEVEL_NAMES.length - 1}`,
    });
  }
  return { name: 'transform', lz4: false, level };
}

/** The name of a transform level as configs write it. */
export function transformLevelName(level: number): string {
  return TRANSFORM_LEVEL_NAMES[level] ?? String(level);
}
