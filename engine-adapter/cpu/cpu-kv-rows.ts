import { KdnError } from '../../common/errors.ts';
import type { KVRows } from '../backend.ts';
import type { CpuKVCache } from './kv-cache.ts';
import { rerotate } from './kernels/rope.ts';

/** Saved cache rows of the CPU backend: host copies of every layer's keys and values. */
export class CpuKVRows implements KVRows {
  readonly bytes: number;

  private constructor(
    readonly tokens: number,
    readonly position: number,
    private keys: Float32Array[],
    private values: Float32Array[],
  ) {
    this.bytes = keys.reduce((n, k, l) => n + k.byteLength + values[l]!.byteLength, 0);
  }

  static save(cache: CpuKVCache, start: number, end: number): CpuKVRows {
    const s = cache.tokenStride;
    cache.reserve(end);
    const keys = cache.keys.map((k) => k.slice(start * s, end * s));
    const values = cache.values.map((v) => v.slice(start * s, end * s));
    return new CpuKVRows(end - start, start, keys, values);
  }

  /** Writes the rows into `cache` at `position`, keys turned by the distance from where they were saved. */
  load(cache: CpuKVCache, position: number, shape: { kvHeads: number; headDim: number }, invFreq: Float32Array): void {
    if (this.keys.length === 0) throw new KdnError('INTERNAL', 'saved KV rows were used after their disposal');
    cache.reserve(position + this.tokens);
    const s = cache.tokenStride;
    const delta = position - this.position;
    for (let l = 0; l < cache.layers; l++) {
      const target = cache.keys[l]!.subarray(position * s, (position + this.tokens) * s);
      if (delta === 0) target.set(this.keys[l]!);
      else rerotate(target, this.keys[l]!, this.tokens, shape.kvHeads, shape.headDim, delta, invFreq);
      cache.values[l]!.set(this.values[l]!, position * s);
    }
  }

  dispose(): void {
    this.keys = [];
    this.values = [];
  }
}
