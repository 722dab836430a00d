import type { KVLayerTensors } from '../types.ts';

/** The shape of one layer: keys and values are each [tokens][kvHeads][headDim]. */
export interface LayerShape {
  tokens: number;
  kvHeads: number;
  headDim: number;
}

/**
 * A layer codec, already bound to its parameters (group size, transform table and level). Encoded blocks hold the
 * layer's keys then its values; each codec file documents its exact byte layout. `decode` trusts that
 * `bytes.length` was checked against `expectedSize` (the format layer does that before calling it) but still
 * throws on a mismatch. `layer` is the block's layer index: codecs whose parameters differ per layer (transform)
 * need it and throw without it; the others ignore it.
 */
export interface LayerCodec {
  expectedSize(shape: LayerShape, layer?: number): number;
  encode(tensors: KVLayerTensors, shape: LayerShape, layer?: number): Uint8Array;
  decode(bytes: Uint8Array, shape: LayerShape, layer?: number): KVLayerTensors;
}

/** Elements in one of a layer's two tensors. */
export function tensorElements(shape: LayerShape): number {
  return shape.tokens * shape.kvHeads * shape.headDim;
}

/** Rounds a byte count up to a multiple of 4, so every section of a block starts 4-byte aligned for the GPU. */
export function align4(n: number): number {
  return (n + 3) & ~3;
}
