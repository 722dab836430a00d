import { statSync, writeFileSync } from 'node:fs';
import { Readable } from 'node:stream';
import { kvTensors, tokenIds } from '../../fixtures/kv-data.ts';
import { createEngine } from '../../engine-adapter/index.ts';
import {
  codecFromString,
  encodeKVObject,
  fileIdentity,
  kvPayloadOffset,
  readKVHeader,
  readKVObject,
  tokenHash,
} from '../../storage/kv-object/index.ts';
import {
  KV_FORMAT_VERSION,
  type KVBlockReader,
  type KVFileBlock,
  type KVHeader,
  type KVLayerBlock,
  type KVObjectReader,
  type KVTensors,
} from '../../storage/kv-object/types.ts';

/**
 * A KVObjectReader straight from float32 tensors (no codec, no checksums): isolates the engine's injection from
 * fp16 rounding. `failAfter` makes the layer stream throw after that many layers, like a dropped connection.
 */
export function directReader(kv: KVTensors, fingerprint: string, options: { failAfter?: number } = {}): KVObjectReader {
  const header: KVHeader = {
    version: KV_FORMAT_VERSION,
    modelFingerprint: fingerprint,
    layers: kv.layers,
    kvHeads: kv.kvHeads,
    headDim: kv.headDim,
    tokens: kv.tokens,
    tokenHash: '0'.repeat(64),
    positionBase: kv.positionBase,
    ropeApplied: kv.ropeApplied,
    codec: { name: 'fp16', lz4: false },
    layerOffsets: Array.from({ length: kv.layers + 1 }, () => 0),
    layerChecksums: Array.from({ length: kv.layers }, () => '0'.repeat(64)),
    payloadChecksum: '0'.repeat(64),
  };
  async function* layers(): AsyncGenerator<KVLayerBlock> {
    for (let layer = 0; layer < kv.layers; layer++) {
      if (options.failAfter === layer) throw new Error('connection reset');
      const tensors = kv.perLayer[layer]!;
      yield { layer, encoded: new Uint8Array(0), decode: () => tensors };
    }
  }
  return { header, layers: layers() };
}

/** The real path: encode as a KV object with the fp16 codec and read it back through the streaming reader. */
export async function fp16Reader(kv: KVTensors, fingerprint: string, tokenIds: number[]): Promise<KVObjectReader> {
  const bytes = encodeKVObject(kv, { modelFingerprint: fingerprint, tokenIds, codec: { name: 'fp16', lz4: false } });
  // Small chunks, so layers arrive over several reads as they would from the network.
  const chunks: Buffer[] = [];
  for (let i = 0; i < bytes.length; i += 1000) chunks.push(bytes.subarray(i, i + 1000));
  return readKVObject(Readable.from(chunks), { modelFingerprint: fingerprint, tokens: tokenIds.length, tokenHash: tokenHash(tokenIds) });
}

/**
 * An fp16 object written to `path`, read as a same-host edge's file reaches the engine over the fast path: the
 * header, then each layer as where it lies in the file (KVFileBlock), never its bytes.
 */
export function fileReader(kv: KVTensors, fingerprint: string, tokenIds: number[], path: string): KVBlockReader {
  const bytes = encodeKVObject(kv, { modelFingerprint: fingerprint, tokenIds, codec: { name: 'fp16', lz4: false } });
  writeFileSync(path, bytes);
  const header = readKVHeader(bytes);
  const at = kvPayloadOffset(bytes);
  const identity = fileIdentity(statSync(path));
  async function* layers(): AsyncGenerator<KVFileBlock> {
    for (let layer = 0; layer < header.layers; layer++) {
      const [start, end] = [header.layerOffsets[layer]!, header.layerOffsets[layer + 1]!];
      yield { layer, source: { path, identity, position: at + start, length: end - start } };
    }
  }
  return { header, layers: layers() };
}

/** A real int8 object's header and its layers' bytes (verified, each in a buffer of its own), as a fetch thread has them. */
export async function encodedLayers(
  shape: { layers: number; kvHeads: number; headDim: number; tokens: number },
  seed: number,
): Promise<{ header: KVHeader; layers: Uint8Array[] }> {
  const bytes = encodeKVObject(kvTensors(shape, seed), {
    modelFingerprint: 'routed-blocks-test',
    tokenIds: tokenIds(shape.tokens),
    codec: codecFromString('int8'),
  });
  const reader = await readKVObject(Readable.from([bytes]));
  const layers: Uint8Array[] = [];
  for await (const block of reader.layers) layers.push(Uint8Array.from(block.encoded));
  return { header: reader.header, layers };
}

/** The KV the CPU engine of the model in `modelDir` computes for `ids` from position 0. */
export async function computedKV(modelDir: string, ids: number[]): Promise<KVTensors> {
  const cpu = await createEngine({ modelDir, backend: 'cpu' });
  try {
    const session = cpu.createSession({ capacity: ids.length });
    await session.prefill(ids, { logits: 'none' });
    return await session.exportKV({ start: 0, end: ids.length });
  } finally {
    await cpu.dispose();
  }
}
