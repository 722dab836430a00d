/**
 * The transform codec in the speed benchmarks: a table fitted on the KV a run stores (timing runs on synthetic KV,
 * so how well a table generalizes is bench/fidelity.ts's question, not theirs), registered in this thread and
 * handed to the engine and to the fetch threads, as kdn's query path does before injecting such objects.
 */
import { fitTransformTable } from '../../storage/kv-object/codecs/transform-fit.ts';
import { serializeTransformTable, type TransformTable, type TransformTableData } from '../../storage/kv-object/codecs/transform-table.ts';
import { transformTables } from '../../storage/kv-object/codecs/transform-tables.ts';
import { codecFromString } from '../../storage/kv-object/index.ts';
import type { CodecSpec, KVTensors } from '../../storage/kv-object/types.ts';
import type { KvFetcher } from '../../kdn/query/kv-fetcher.ts';
import { kvTensors } from '../../fixtures/kv-data.ts';
import type { BenchEngine } from './synthetic-engine.ts';

/** A one-layer table's parameters repeated for `layers` layers. */
function everyLayer(one: TransformTableData, layers: number): TransformTableData {
  const tile = <T extends Float32Array | Uint8Array>(a: T): T => {
    const out = new (a.constructor as new (n: number) => T)(a.length * layers);
    for (let l = 0; l < layers; l++) out.set(a, l * a.length);
    return out;
  };
  return {
    ...one,
    layers,
    mean: tile(one.mean),
    basis: tile(one.basis),
    levels: one.levels.map((lv) => ({ ...lv, bits: tile(lv.bits), step: tile(lv.step), offset: tile(lv.offset) })),
  };
}

export class BenchTransform {
  private constructor(readonly table: TransformTable) {}

  /**
   * Fits a table on the first layer of `sample` (keys before RoPE), used for every layer, and makes the engine ready
   * for its objects. Synthetic KV's layers are alike, and fitting one layer of the 8B shape takes seconds where all
   * 32 took minutes.
   */
  static async fit(engine: BenchEngine, sample: KVTensors): Promise<BenchTransform> {
    const one = fitTransformTable([{ ...sample, layers: 1, perLayer: sample.perLayer.slice(0, 1) }], engine.info.fingerprint);
    const table = transformTables.register(serializeTransformTable(everyLayer(one, engine.info.layers)));
    await engine.useTransformTable(table);
    return new BenchTransform(table);
  }

  /** The codec spec of `level` ("x8", or undefined for the default level) with this table. */
  spec(level: string | undefined): CodecSpec {
    return { ...codecFromString(level === undefined ? 'transform' : `transform:${level}`), table: this.table.hash };
  }

  useIn(fetcher: KvFetcher): void {
    fetcher.useTransformTable(this.table.bytes);
  }
}

/**
 * Seeded synthetic KV (fixtures/kv-data.ts) whose energy falls off across each head's dimensions, e^(-d / (D/8)),
 * as real keys and values concentrate theirs on a few principal components: a fitted table then spends its bits on
 * the leading components and leaves the rest at zero, as on real KV. Keys are before RoPE.
 */
export function spectralKV(shape: { layers: number; kvHeads: number; headDim: number; tokens: number }, seed: number): KVTensors {
  const kv = kvTensors(shape, seed);
  const D = shape.headDim;
  const scale = Float32Array.from({ length: D }, (_, d) => Math.exp(-d / (D / 8)));
  const shaped = (a: Float32Array): Float32Array => a.map((x, i) => x * scale[i % D]!);
  return { ...kv, ropeApplied: false, perLayer: kv.perLayer.map((l) => ({ keys: shaped(l.keys), values: shaped(l.values) })) };
}
