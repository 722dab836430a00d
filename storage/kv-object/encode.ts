import { KdnError } from '../../common/errors.ts';
import { KV_FORMAT_VERSION, type CodecSpec, type KVHeader, type KVTensors } from './types.ts';
import { codecEntry, codecFor } from './codecs/index.ts';
import { HALF_MAX } from './half.ts';
import { payloadChecksumOf, validateHeader } from './header.ts';
import { serializeHeader } from './format.ts';
import { lz4Frame } from './lz4.ts';
import { tokenHash } from './token-hash.ts';
import { layerDigest, type LayerDigestVersion } from './layer-digest.ts';

export interface EncodeMeta {
  modelFingerprint: string;
  tokenIds: ArrayLike<number>;
  codec: CodecSpec;
  /**
   * Format version to write, KV_FORMAT_VERSION unless set: 1 only for readers that predate version 2, which
   * refuse it as KV_UNSUPPORTED.
   */
  formatVersion?: LayerDigestVersion;
}

function invalid(message: string): KdnError {
  return new KdnError('INVALID_ARGUMENT', `cannot encode KV object: ${message}`);
}

/** Every codec stores halves (values or scales), so KV outside the half range cannot be stored faithfully. */
function checkFinite(data: Float32Array, what: string): void {
  for (let i = 0; i < data.length; i++) {
    const x = data[i]!;
    if (!(x >= -HALF_MAX && x <= HALF_MAX)) throw invalid(`${what}[${i}] is ${x}, outside the fp16 range`);
  }
}

/** Encodes a chunk's KV into one KV object (format.ts): header, then each layer's block in layer order. */
export function encodeKVObject(tensors: KVTensors, meta: EncodeMeta): Buffer {
  const { layers, kvHeads, headDim, tokens } = tensors;
  if (tensors.perLayer.length !== layers) throw invalid(`${tensors.perLayer.length} layers given, header says ${layers}`);
  if (meta.tokenIds.length !== tokens) throw invalid(`${meta.tokenIds.length} token ids for ${tokens} tokens`);
  const codec = codecFor(meta.codec);
  if (tensors.ropeApplied && codecEntry(meta.codec.name).keysBeforeRope) {
    throw invalid(`${meta.codec.name} encodes keys before RoPE; unrotate them first (engine-adapter kvBeforeRope)`);
  }
  const shape = { tokens, kvHeads, headDim };
  const version = meta.formatVersion ?? KV_FORMAT_VERSION;
  const n = tokens * kvHeads * headDim;
  const blocks: Uint8Array[] = [];
  const layerOffsets = [0];
  const layerChecksums: string[] = [];
  tensors.perLayer.forEach((layer, i) => {
    if (layer.keys.length !== n || layer.values.length !== n) {
      throw invalid(`layer ${i} keys/values have ${layer.keys.length}/${layer.values.length} elements, expected ${n}`);
    }
    checkFinite(layer.keys, `layer ${i} keys`);
    checkFinite(layer.values, `layer ${i} values`);
    const encoded = codec.encode(layer, shape, i);
    const stored = meta.codec.lz4 ? lz4Frame(encoded) : encoded;
    blocks.push(stored);
    layerOffsets.push(layerOffsets[i]! + stored.length);
    layerChecksums.push(layerDigest(version, stored));
  });
  const header: KVHeader = {
    version,
    modelFingerprint: meta.modelFingerprint,
    layers,
    kvHeads,
    headDim,
    tokens,
    tokenHash: tokenHash(meta.tokenIds),
    positionBase: tensors.positionBase,
    ropeApplied: tensors.ropeApplied,
    codec: { ...meta.codec },
    layerOffsets,
    layerChecksums,
    payloadChecksum: payloadChecksumOf(layerChecksums),
  };
  // The same checks a reader makes, so we never write an object we would refuse to read.
  try {
    validateHeader(header);
  } catch (err) {
    throw invalid((err as Error).message);
  }
  return Buffer.concat([serializeHeader(header), ...blocks]);
}
