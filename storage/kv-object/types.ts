/**
 * The KV object: the KV cache of one knowledge chunk for one model, as stored at the origin and shipped by edges.
 * This file is the single definition of its contract; ./format.ts documents the byte layout.
 *
 * Tensor layout everywhere (decoded, exported by the engine, injected into it): per layer, keys and values are
 * each [tokens][kvHeads][headDim] row-major, so one chunk is contiguous in a token-major cache.
 */

import type { LayerDigestVersion } from './layer-digest.ts';

/** The format version encoders write (format.ts); readers also take version 1 (layer-digest.ts). */
export const KV_FORMAT_VERSION = 2;

/** Every codec's name: the codec registry (codecs/index.ts) and each engine's expander table are keyed by it. */
export type CodecName = 'fp16' | 'int8' | 'int4' | 'transform';

export interface CodecSpec {
  name: CodecName;
  /** lz4 framing applied after the codec, per layer block (not for transform, whose codes do not compress). */
  lz4: boolean;
  /** int8/int4: quantization group length (tokens for keys, channels for values). */
  groupSize?: number;
  /** transform: sha256 hex of the transform table (codecs/transform-table.ts) the object was encoded with. */
  table?: string;
  /** transform: index of the table's quality level. */
  level?: number;
}

export interface KVHeader {
  /** Format version: it names the hash of layerChecksums (layer-digest.ts). */
  version: LayerDigestVersion;
  /** Model fingerprint from the engine; changes whenever weights or architecture change. */
  modelFingerprint: string;
  layers: number;
  kvHeads: number;
  headDim: number;
  tokens: number;
  /** sha256 hex of the token ids as little-endian uint32. */
  tokenHash: string;
  /** Absolute position of the chunk's first token when its KV was computed. */
  positionBase: number;
  /** true: keys are stored with RoPE applied at positionBase..; false: keys are stored before RoPE. */
  ropeApplied: boolean;
  codec: CodecSpec;
  /** Byte offsets of each layer block in the payload; length layers + 1 (the last is the payload length). */
  layerOffsets: number[];
  /**
   * Hex digest of each stored (post-lz4) layer block, so a streaming reader verifies a layer before using it:
   * sha256 in version 1, BLAKE3-256 in version 2.
   */
  layerChecksums: string[];
  /** sha256 hex over the concatenated layerChecksums: the checksum of the whole payload. */
  payloadChecksum: string;
}

/** What a reader expects of an object; any mismatch is KV_MISMATCH. */
export interface KVExpectation {
  modelFingerprint?: string;
  layers?: number;
  kvHeads?: number;
  headDim?: number;
  tokens?: number;
  tokenHash?: string;
}

/** One layer's KV as float32, [tokens][kvHeads][headDim] each. */
export interface KVLayerTensors {
  keys: Float32Array;
  values: Float32Array;
}

/** A whole chunk's KV as float32, what the engine exports and the encoder takes. */
export interface KVTensors {
  layers: number;
  kvHeads: number;
  headDim: number;
  tokens: number;
  positionBase: number;
  ropeApplied: boolean;
  perLayer: KVLayerTensors[];
}

/**
 * One verified layer block from a stream. `encoded` is the codec's bytes after lz4 is undone (checksum already
 * verified), for engines that expand int8/int4 on the GPU; `decode()` gives float32 on the CPU.
 */
export interface KVLayerBlock {
  layer: number;
  encoded: Uint8Array;
  decode(): KVLayerTensors;
  /** Where the same verified bytes lie in a file, when they were read from one that never changes (see KVBlockSource). */
  source?: KVBlockSource;
}

/**
 * A verified block's bytes in a file: a same-host edge's shared-memory copy, which is written once under a temporary
 * name and renamed, never changed in place, or a fetch thread's private spool file, appended to but never rewritten
 * (kdn/query/receive-spool.ts). An engine may read the bytes from there on another thread instead of
 * copying them on its own; it first checks that `path` still names the very file they were verified from
 * (`identity`), and otherwise copies the block's own bytes, or fails the injection (KV_CORRUPT) for a KVFileBlock,
 * which has none.
 */
export interface KVBlockSource {
  path: string;
  /**
   * Another path to the same file, valid while the thread that verified it holds it open (Linux: /proc/self/fd/N,
   * for a reader in the same process): it still names the file after the edge evicted or replaced `path`. A reader
   * tries it first, checking the identity the same way, since the descriptor's number may be taken by another file.
   */
  pin?: string;
  /**
   * The file's device, inode, size and modification time when the block was verified, joined by ':'; for a private
   * file still being appended to, reached by `pin` alone, its device and inode (block-source.ts appendedFileIdentity).
   */
  identity: string;
  /** Offset of the block's first byte in the file. */
  position: number;
  /** The block's bytes. */
  length: number;
}

/**
 * A verified layer block handed to an engine on the same host as where its bytes lie instead of the bytes: the
 * thread that verified them reuses its buffer at once, and the engine reads them from the file (block-source.ts
 * readBlockSource, or its own reads) straight to where they go.
 */
export interface KVFileBlock {
  layer: number;
  source: KVBlockSource;
  encoded?: undefined;
}

/** What an engine injects: a block with its bytes, or one it reads from a file. */
export type KVBlock = KVLayerBlock | KVFileBlock;

/**
 * How far the layers of a stream whose file blocks come before their bytes are verified (announced by a same-host
 * fetch thread, kdn/query/block-outlet.ts) have been verified since. An engine may place such blocks as they come,
 * reading their bytes from the file, but must not compute with layer l before `through` passes it. A layer that
 * fails verification fails the stream (KV_CORRUPT), and the stream ends only once every layer verified.
 */
export interface LayerVerification {
  /** How many leading layers are verified. */
  readonly through: number;
  /** Calls `listener` whenever `through` grows. */
  onAdvance(listener: () => void): void;
}

/** A KV object as an engine reads it: a KVObjectReader whose blocks may be KVFileBlocks. */
export interface KVBlockReader {
  header: KVHeader;
  layers: AsyncIterable<KVBlock>;
  /** Absent: every block is verified when it is yielded. */
  verification?: LayerVerification;
}

/** A KV object being read layer by layer: the header first, then blocks in layer order as bytes arrive. */
export interface KVObjectReader {
  header: KVHeader;
  layers: AsyncIterable<KVLayerBlock>;
}
