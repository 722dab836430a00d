import { kvBeforeRope, loadModelConfig, type ModelConfig } from '../../engine-adapter/index.ts';
import type { Engine } from '../../engine-adapter/types.ts';
import { fitModelTable } from '../../kdn/ingest/transform/fit-model-table.ts';
import { codecFromString, encodeKVObject, fitTransformTable, transformTables, type TransformTable } from '../../storage/kv-object/index.ts';
import type { KVTensors } from '../../storage/kv-object/types.ts';

type RopeConfig = Pick<ModelConfig, 'headDim' | 'ropeTheta' | 'ropeScaling'>;

/** Encodes exported KV (keys after RoPE) as a stored object with `codec`, e.g. "int4+lz4" or "transform:x8". */
export interface KVEncoder {
  encode(kv: KVTensors, tokenIds: number[], fingerprint: string, codec: string): Uint8Array;
}

/** The codecs that need no table; a transform codec needs a TransformSetup. */
export const PLAIN_ENCODER: KVEncoder = {
  encode(kv, tokenIds, fingerprint, codec) {
    const spec = codecFromString(codec);
    if (spec.name === 'transform') throw new Error(`${codec} needs a transform table: encode with a TransformSetup`);
    return encodeKVObject(kv, { modelFingerprint: fingerprint, tokenIds, codec: spec });
  },
};

/**
 * What benchmarks need to encode with the transform codec: a table registered in this process and given to the
 * engine, and the model's RoPE parameters to unrotate exported keys. The table is fitted as ingest fits it
 * (shipped calibration text) unless a benchmark fits one on the data it measures, to see how far a table
 * generalizes.
 */
export class TransformSetup implements KVEncoder {
  private constructor(
    readonly table: TransformTable,
    private readonly rope: RopeConfig,
    private readonly engine: Engine,
  ) {}

  static async shipped(engine: Engine): Promise<TransformSetup> {
    const table = transformTables.register(await fitModelTable(engine));
    await engine.useTransformTable(table);
    return new TransformSetup(table, await loadModelConfig(engine.info.path), engine);
  }

  /** A table fitted on `samples` (exported KV, keys after RoPE) instead of the calibration text. */
  async withTableFrom(samples: readonly KVTensors[], fingerprint: string): Promise<TransformSetup> {
    const table = transformTables.register(
      fitTransformTable(
        samples.map((s) => kvBeforeRope(s, this.rope)),
        fingerprint,
      ),
    );
    await this.engine.useTransformTable(table);
    return new TransformSetup(table, this.rope, this.engine);
  }

  /** Encodes exported KV with `codec` (e.g. "int4+lz4" or "transform:x8"); transform gets pre-RoPE keys and the table. */
  encode(kv: KVTensors, tokenIds: number[], fingerprint: string, codec: string): Uint8Array {
    const spec = codecFromString(codec);
    if (spec.name !== 'transform') return PLAIN_ENCODER.encode(kv, tokenIds, fingerprint, codec);
    return encodeKVObject(kvBeforeRope(kv, this.rope), {
      modelFingerprint: fingerprint,
      tokenIds,
      codec: { ...spec, table: this.table.hash },
    });
  }
}
