/** The KV object format: encode, verify, decode (whole or streamed layer by layer). Byte layout: ./format.ts. */
export type * from './types.ts';
export { KV_FORMAT_VERSION } from './types.ts';
export { LAYER_DIGESTS, READABLE_VERSIONS as KV_READABLE_VERSIONS, type LayerDigestVersion } from './layer-digest.ts';
export { encodeKVObject, type EncodeMeta } from './encode.ts';
export { decodeKVObject, kvPayloadOffset, readKVHeader, verifyKVObject } from './decode.ts';
export { readKVObject } from './stream-reader.ts';
export { verifiedBlock } from './layer-block.ts';
export {
  appendedFileIdentity,
  fileIdentity,
  isIdentified,
  layerBlockOf,
  pinPath,
  readBlockSource,
  sourceGone,
  sourcePaths,
} from './block-source.ts';
export { tokenHash } from './token-hash.ts';
export { codecFromString, codecToString } from './codec-spec.ts';
export { codecEntry, codecFor, DEFAULT_GROUP_SIZE, type CodecEntry, type LayerCodec, type LayerShape } from './codecs/index.ts';
export * from './codecs/transform-table.ts';
export { fitTransformTable, TRANSFORM_LEVELS, DEFAULT_TRANSFORM_LEVEL, type LevelSpec } from './codecs/transform-fit.ts';
export { transformTables, TransformTableRegistry } from './codecs/transform-tables.ts';
export { quantizedSections, type QuantizedSections } from './codecs/quantized.ts';
export { LIMITS as KV_LIMITS } from './header.ts';
export { MAX_HEADER_BYTES, PREAMBLE_BYTES as KV_PREAMBLE_BYTES } from './format.ts';
