import type { KVCacheHandle } from '../backend.ts';

/**
 * A session's KV cache on the host: per layer, keys and values token-major [tokens][kvHeads][headDim] (the KV
 * object layout, so chunks copy in and out contiguously). Storage grows by doubling up to `capacity`, so a
 * session with a large capacity costs memory only for the tokens it holds.
 */
export class CpuKVCache implements KVCacheHandle {
  readonly keys: Float32Array[];
  readonly values: Float32Array[];
  private allocated = 0;

  constructor(
    readonly capacity: number,
    readonly layers: number,
    /** kvHeads * headDim: floats per token per layer. */
    readonly tokenStride: number,
  ) {
    this.keys = Array.from({ length: layers }, () => new Float32Array(0));
    this.values = Array.from({ length: layers }, () => new Float32Array(0));
  }

  /** Makes room for tokens [0, tokens); the caller has checked tokens <= capacity. */
  reserve(tokens: number): void {
    if (tokens <= this.allocated) return;
    const next = Math.min(this.capacity, Math.max(tokens, this.allocated * 2, 64));
    for (let l = 0; l < this.layers; l++) {
      const k = new Float32Array(next * this.tokenStride);
      k.set(this.keys[l]!);
      this.keys[l] = k;
      const v = new Float32Array(next * this.tokenStride);
      v.set(this.values[l]!);
      this.values[l] = v;
    }
    this.allocated = next;
  }

  dispose(): void {
    for (let l = 0; l < this.layers; l++) {
      this.keys[l] = new Float32Array(0);
      this.values[l] = new Float32Array(0);
    }
    this.allocated = 0;
  }
}
