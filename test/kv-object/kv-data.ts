import { mulberry32 as rng } from '../../common/rng.ts';
import type { KVLayerTensors, KVTensors } from '../../storage/kv-object/types.ts';

/** Deterministic PRNG so failures reproduce. */
export { rng };

export function gaussian(random: () => number): () => number {
  return () => Math.sqrt(-2 * Math.log(1 - random())) * Math.cos(2 * Math.PI * random());
}

export interface Shape {
  layers: number;
  kvHeads: number;
  headDim: number;
  tokens: number;
}

/**
 * KV-shaped data: keys have a per-channel offset and scale with a few outlier channels ~10x larger (as post-RoPE
 * keys do), values are plain gaussians.
 */
export function kvTensors(shape: Shape, seed = 1): KVTensors {
  const random = rng(seed);
  const normal = gaussian(random);
  const channels = shape.kvHeads * shape.headDim;
  const n = shape.tokens * channels;
  const perLayer: KVLayerTensors[] = [];
  for (let l = 0; l < shape.layers; l++) {
    const channelScale = Float64Array.from({ length: channels }, () => (random() < 0.05 ? 10 : 1) * (0.5 + random()));
    const channelOffset = Float64Array.from({ length: channels }, () => normal() * 0.5);
    const keys = new Float32Array(n);
    const values = new Float32Array(n);
    for (let i = 0; i < n; i++) {
      const c = i % channels;
      keys[i] = channelOffset[c]! + channelScale[c]! * normal();
      values[i] = normal();
    }
    perLayer.push({ keys, values });
  }
  return { ...shape, positionBase: 0, ropeApplied: true, perLayer };
}

export function tokenIds(count: number, seed = 7): number[] {
  const random = rng(seed);
  return Array.from({ length: count }, () => Math.floor(random() * 32000));
}

/** Splits bytes into chunks of sizes drawn by `size`. */
export function* chunked(bytes: Uint8Array, size: () => number): Generator<Uint8Array> {
  for (let i = 0; i < bytes.length;) {
    const n = Math.max(1, size());
    yield bytes.subarray(i, i + n);
    i += n;
  }
}

export async function* asAsync(chunks: Iterable<Uint8Array>): AsyncGenerator<Uint8Array> {
  for (const c of chunks) yield c;
}
