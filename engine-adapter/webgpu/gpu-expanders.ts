/**
 * How each codec's layer blocks are expanded on the GPU into a layer's f32 key and value caches: one entry per codec,
 * so a codec added to the KV format without a GPU expander fails to compile here.
 */
import { KdnError } from '../../common/errors.ts';
import { quantizedSections } from '../../storage/kv-object/index.ts';
import type { CodecName, CodecSpec } from '../../storage/kv-object/types.ts';
import type { GpuContext, Recorder, Binding } from './gpu-context.ts';
import type { GpuTransformTables } from './gpu-transform-tables.ts';
import type { ExpandJob } from './kernels/expand-jobs.ts';
import { recordKvDequantFp16 } from './kernels/kv-dequant-fp16.ts';
import { recordKvDequantInt } from './kernels/kv-dequant-int.ts';
import { recordKvExpandTransform } from './kernels/kv-expand-transform.ts';

/** What every expander may use: the device and the transform tables uploaded to it. */
export interface ExpandEnv {
  ctx: GpuContext;
  tables: GpuTransformTables;
}

/** Blocks of one layer, codec spec and length, each a job: its bytes in `src`, its rows in the caches. */
export interface ExpandBatch {
  src: GPUBuffer;
  keys: Binding;
  values: Binding;
  layer: number;
  spec: CodecSpec;
  tokens: number;
  kvHeads: number;
  headDim: number;
  jobs: readonly ExpandJob[];
}

export interface GpuExpander {
  /** What besides layer and length must match for blocks to share a dispatch. */
  key(spec: CodecSpec): string;
  /** Throws, before a block is staged, when blocks of `spec` cannot be expanded here (e.g. their table is missing). */
  check(env: ExpandEnv, spec: CodecSpec): void;
  record(env: ExpandEnv, rec: Recorder, batch: ExpandBatch): void;
}

function quantized(bits: 8 | 4): GpuExpander {
  return {
    key: (spec) => String(spec.groupSize ?? 0),
    check: () => undefined,
    record({ ctx }, rec, b) {
      const groupSize = b.spec.groupSize!;
      const sections = quantizedSections({ tokens: b.tokens, kvHeads: b.kvHeads, headDim: b.headDim }, bits, groupSize);
      const channels = b.kvHeads * b.headDim;
      const { src, keys, values, tokens, jobs } = b;
      recordKvDequantInt(ctx, rec, { bits, src, sections, keys, values, tokens, channels, groupSize, jobs });
    },
  };
}

function transformRef(spec: CodecSpec): { table: string; level: number } {
  if (spec.table === undefined || spec.level === undefined) {
    throw new KdnError('KV_CORRUPT', 'a transform-codec header names no table or level', { hint: 're-ingest the chunk' });
  }
  return { table: spec.table, level: spec.level };
}

export const GPU_EXPANDERS: Record<CodecName, GpuExpander> = {
  fp16: {
    key: () => '',
    check: () => undefined,
    record({ ctx }, rec, b) {
      recordKvDequantFp16(ctx, rec, { src: b.src, keys: b.keys, values: b.values, n: b.tokens * b.kvHeads * b.headDim, jobs: b.jobs });
    },
  },
  int8: quantized(8),
  int4: quantized(4),
  transform: {
    key: (spec) => {
      const { table, level } = transformRef(spec);
      return `${table}/${level}`;
    },
    check({ tables }, spec) {
      const { table, level } = transformRef(spec);
      tables.level(table, level);
    },
    record({ ctx, tables }, rec, b) {
      const { table, level } = transformRef(b.spec);
      recordKvExpandTransform(ctx, rec, { ...b, level: tables.level(table, level) });
    },
  },
};
