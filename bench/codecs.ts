/**
 * KV object codecs on a realistic chunk (default 32 layers x 8 kv heads x 128 head dim x 256 tokens, float32
 * in, keys with outlier channels): size vs fp16, encode and decode throughput in MB/s of fp16-equivalent bytes
 * (2 bytes per element, keys and values), max and RMS reconstruction error. The data has no low-rank structure,
 * so the transform levels' errors here say nothing about quality (bench/fidelity.ts measures that); their sizes
 * and speeds are what this measures.
 * Args: --layers N --kv-heads N --head-dim N --tokens N --reps N --group N
 */
import { parseArgs } from 'node:util';
import { performance } from 'node:perf_hooks';
import {
  codecFromString,
  decodeKVObject,
  encodeKVObject,
  fitTransformTable,
  TRANSFORM_LEVELS,
  transformTables,
} from '../storage/kv-object/index.ts';
import type { KVTensors } from '../storage/kv-object/types.ts';
import { kvTensors, tokenIds } from '../fixtures/kv-data.ts';
import type { BenchRecord, BenchReport } from './report.ts';

const CODECS = ['fp16', 'fp16+lz4', 'int8', 'int8+lz4', 'int4', 'int4+lz4', ...TRANSFORM_LEVELS.map((l) => `transform:${l.name}`)];

function positiveInt(value: string | undefined, fallback: number, name: string): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new Error(`--${name} must be a positive integer`);
  return n;
}

/** Best of `reps` runs, in seconds: the least disturbed by other work on a shared machine. */
function best<T>(reps: number, fn: () => T): { seconds: number; value: T } {
  let seconds = Infinity;
  let value!: T;
  for (let i = 0; i < reps; i++) {
    const t0 = performance.now();
    value = fn();
    seconds = Math.min(seconds, (performance.now() - t0) / 1000);
  }
  return { seconds, value };
}

function errors(want: KVTensors, got: KVTensors): { max: number; rms: number } {
  let max = 0;
  let sumSq = 0;
  let count = 0;
  want.perLayer.forEach((layer, l) => {
    for (const kind of ['keys', 'values'] as const) {
      const a = layer[kind];
      const b = got.perLayer[l]![kind];
      for (let i = 0; i < a.length; i++) {
        const e = Math.abs(a[i]! - b[i]!);
        if (e > max) max = e;
        sumSq += e * e;
      }
      count += a.length;
    }
  });
  return { max, rms: Math.sqrt(sumSq / count) };
}

export async function run(args: string[]): Promise<BenchReport> {
  const { values } = parseArgs({
    args,
    options: {
      layers: { type: 'string' },
      'kv-heads': { type: 'string' },
      'head-dim': { type: 'string' },
      tokens: { type: 'string' },
      reps: { type: 'string' },
      group: { type: 'string' },
    },
  });
  const shape = {
    layers: positiveInt(values.layers, 32, 'layers'),
    kvHeads: positiveInt(values['kv-heads'], 8, 'kv-heads'),
    headDim: positiveInt(values['head-dim'], 128, 'head-dim'),
    tokens: positiveInt(values.tokens, 256, 'tokens'),
  };
  const reps = positiveInt(values.reps, 3, 'reps');
  const groupSize = positiveInt(values.group, 32, 'group');
  const tensors = kvTensors(shape, 42);
  const ids = tokenIds(shape.tokens);
  const fp16Bytes = 2 * 2 * shape.layers * shape.tokens * shape.kvHeads * shape.headDim;
  const mb = fp16Bytes / 1e6;

  // transform: a table fitted on another sample of the same generator (the data stands in for pre-RoPE keys).
  const fitStart = performance.now();
  const table = transformTables.register(fitTransformTable([{ ...kvTensors(shape, 7), ropeApplied: false }], 'bench'));
  const fitSeconds = (performance.now() - fitStart) / 1000;
  const records: BenchRecord[] = [];
  for (const name of CODECS) {
    const parsed = codecFromString(name, groupSize);
    const codec = parsed.name === 'transform' ? { ...parsed, table: table.hash } : parsed;
    const input = parsed.name === 'transform' ? { ...tensors, ropeApplied: false } : tensors;
    const enc = best(reps, () => encodeKVObject(input, { modelFingerprint: 'bench', tokenIds: ids, codec }));
    const dec = best(reps, () => decodeKVObject(enc.value).tensors);
    const err = errors(tensors, dec.value);
    records.push({
      codec: name,
      bytes: enc.value.length,
      ratioVsFp16: Number((enc.value.length / fp16Bytes).toFixed(4)),
      encodeMBps: Number((mb / enc.seconds).toFixed(1)),
      decodeMBps: Number((mb / dec.seconds).toFixed(1)),
      maxErr: Number(err.max.toPrecision(4)),
      rmsErr: Number(err.rms.toPrecision(4)),
    });
  }
  return {
    params: {
      ...shape,
      groupSize,
      reps,
      fp16Bytes,
      data: 'keys: per-channel offset/scale, 5% outlier channels x10; values: N(0,1)',
      timing: 'best of reps; decode = verify checksums + lz4 + dequantize; transform encode excludes unrotating keys',
      transformTable: `fitted on another sample of the same generator in ${fitSeconds.toFixed(1)} s, ${table.bytes.length} bytes`,
    },
    records,
  };
}
