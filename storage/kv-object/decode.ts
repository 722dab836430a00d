import { KdnError } from '../../common/errors.ts';
import type { KVExpectation, KVHeader, KVLayerBlock, KVTensors } from './types.ts';
import { HEADER_HASH_BYTES, PREAMBLE_BYTES, parseHeader, parsePreamble, payloadStart } from './format.ts';
import { checkExpectation } from './header.ts';
import { openLayerBlock } from './layer-block.ts';

/**
 * Where an object's payload starts (the bytes its preamble, header and header hash take), from its first
 * KV_PREAMBLE_BYTES or more: how much of an object to read before readKVHeader can parse it.
 */
export function kvPayloadOffset(prefix: Uint8Array): number {
  return payloadStart(parsePreamble(prefix).headerLength);
}

/**
 * Parses and validates the header from the first bytes of an object (the payload need not be there).
 * Checks the header hash and the expectation, not the payload.
 */
export function readKVHeader(bytes: Uint8Array, expect?: KVExpectation): KVHeader {
  return readHeaderSection(bytes, expect).header;
}

function readHeaderSection(bytes: Uint8Array, expect: KVExpectation | undefined): { header: KVHeader; payloadOffset: number } {
  const { version, headerLength } = parsePreamble(bytes);
  const payloadOffset = payloadStart(headerLength);
  if (bytes.length < payloadOffset) {
    throw new KdnError('KV_CORRUPT', `KV header needs ${payloadOffset} bytes, only ${bytes.length} given`);
  }
  const header = parseHeader(
    bytes.subarray(PREAMBLE_BYTES, PREAMBLE_BYTES + headerLength),
    bytes.subarray(payloadOffset - HEADER_HASH_BYTES, payloadOffset),
    version,
  );
  checkExpectation(header, expect);
  return { header, payloadOffset };
}

/** Header plus every layer block, verified; shared by verify and decode. */
function openAll(bytes: Uint8Array, expect: KVExpectation | undefined): { header: KVHeader; blocks: KVLayerBlock[] } {
  const { header, payloadOffset: start } = readHeaderSection(bytes, expect);
  const total = start + header.layerOffsets[header.layers]!;
  if (bytes.length !== total) {
    throw new KdnError('KV_CORRUPT', `KV object is ${bytes.length} bytes, its header says ${total}`, {
      hint: bytes.length < total ? 'the object is truncated; refetch it' : undefined,
    });
  }
  const blocks: KVLayerBlock[] = [];
  for (let i = 0; i < header.layers; i++) {
    const stored = bytes.subarray(start + header.layerOffsets[i]!, start + header.layerOffsets[i + 1]!);
    blocks.push(openLayerBlock(header, i, stored));
  }
  return { header, blocks };
}

/** Full check of a whole object in memory: magic, header, every layer checksum, sizes, lz4 framing. */
export function verifyKVObject(bytes: Uint8Array, expect?: KVExpectation): KVHeader {
  return openAll(bytes, expect).header;
}

/** Verifies then decodes a whole object to float32. */
export function decodeKVObject(bytes: Uint8Array, expect?: KVExpectation): { header: KVHeader; tensors: KVTensors } {
  const { header, blocks } = openAll(bytes, expect);
  return {
    header,
    tensors: {
      layers: header.layers,
      kvHeads: header.kvHeads,
      headDim: header.headDim,
      tokens: header.tokens,
      positionBase: header.positionBase,
      ropeApplied: header.ropeApplied,
      perLayer: blocks.map((b) => b.decode()),
    },
  };
}
