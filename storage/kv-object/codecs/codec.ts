import type { KVLayerTensors } from '../types.ts';

/** The shape of one layer: keys and values are each [tokens][kvHeads][headDim]. */
export interface LayerShape {
  tokens: number;
  kvHeads: number;
  headDim: number;
}

/**
 * A layer codec, already bound to its parameters (group size). Encoded blocks hold the layer's keys then its
 * values; each codec file documents its exact byte layout. `decode` trusts that `bytes.length` was checked
 * against `expectedSize` (the format layer does that before calling it) but still throws on a mismatch.
 */
export interface LayerCodec {
  expectedSize(shape: LayerShape): number;
  encode(layer: KVLayerTensors, shape: LayerShape): Uint8Array;
  decode(bytes: Uint8Array, shape: LayerShape): KVLayerTensors;
}

/** Elements in one of a layer's two tensors. */
export function tensorElements(shape: LayerShape): number {
  return shape.tokens * shape.kvHeads * shape.headDim;
}

/** Rounds a byte count up to a multiple of 4, so every section of a block starts 4-byte aligned for the GPU. */
export function align4(n: number): number {
  return (n + 3) & ~3;
}
