import { KdnError } from '../../common/errors.ts';
import type { KVHeader, KVLayerBlock, KVTensors } from '../../storage/kv-object/types.ts';
import type { ForwardBackend, KVCacheHandle } from '../backend.ts';
import type { ModelWeights } from '../model/weights.ts';
import { cpuBlendForward, cpuForward } from './forward.ts';
import { applyRope, rerotate, ropeInvFreq } from './kernels/rope.ts';
import { CpuKVCache } from './kv-cache.ts';
import { CpuKVRows } from './cpu-kv-rows.ts';

/**
 * The float32 TypeScript reference backend: every kernel in plain code, the KV cache in host arrays. Slow, but
 * the ground truth the WebGPU backend is tested against.
 */
export function createCpuBackend(weights: ModelWeights): ForwardBackend {
  const c = weights.config;
  const invFreq = ropeInvFreq(c);
  const tokenStride = c.kvHeads * c.headDim;

  const own = (cache: KVCacheHandle): CpuKVCache => {
    if (!(cache instanceof CpuKVCache)) throw new KdnError('INTERNAL', 'KV cache handle does not belong to the cpu backend');
    return cache;
  };
  const checkRange = (cache: CpuKVCache, start: number, end: number): void => {
    if (!Number.isInteger(start) || !Number.isInteger(end) || start < 0 || end < start || end > cache.capacity) {
      throw new KdnError('INVALID_ARGUMENT', `KV range [${start}, ${end}) is outside the cache (capacity ${cache.capacity})`);
    }
  };

  return {
    name: 'cpu',
    device: 'CPU reference (float32 TypeScript)',

    createKVCache(capacity: number): KVCacheHandle {
      return new CpuKVCache(capacity, c.layers, tokenStride);
    },

    async forward(cache, tokens, position, logits, gate) {
      const kv = own(cache);
      checkRange(kv, position, position + tokens.length);
      // The reference computes on the event loop, so nothing would overlap: it waits for the whole context instead.
      if (gate) for (let l = 0; l < c.layers; l++) await gate(l);
      return cpuForward(weights, invFreq, kv, tokens, position, logits);
    },

    async blendForward(cache, tokens, position, plan, logits, gate) {
      const kv = own(cache);
      checkRange(kv, position, position + tokens.length);
      if (gate) for (let l = 0; l < c.layers; l++) await gate(l);
      return cpuBlendForward(weights, invFreq, kv, tokens, position, plan, logits);
    },

    async readKV(cache, start, end): Promise<KVTensors> {
      const kv = own(cache);
      checkRange(kv, start, end);
      kv.reserve(end);
      return {
        layers: c.layers,
        kvHeads: c.kvHeads,
        headDim: c.headDim,
        tokens: end - start,
        positionBase: start,
        ropeApplied: true,
        perLayer: kv.keys.map((keys, l) => ({
          keys: keys.slice(start * tokenStride, end * tokenStride),
          values: kv.values[l]!.slice(start * tokenStride, end * tokenStride),
        })),
      };
    },

    async writeKVLayer(cache, header: KVHeader, block: KVLayerBlock, position: number): Promise<void> {
      const kv = own(cache);
      if (block.layer < 0 || block.layer >= c.layers) throw new KdnError('KV_MISMATCH', `KV layer ${block.layer} does not exist in a ${c.layers}-layer model`);
      checkRange(kv, position, position + header.tokens);
      const { keys, values } = block.decode();
      const size = header.tokens * tokenStride;
      if (keys.length !== size || values.length !== size) {
        throw new KdnError('KV_MISMATCH', `KV layer ${block.layer} holds ${keys.length} keys and ${values.length} values, expected ${size} each`);
      }
      kv.reserve(position + header.tokens);
      const target = kv.keys[block.layer]!.subarray(position * tokenStride, position * tokenStride + size);
      if (header.ropeApplied) {
        rerotate(target, keys, header.tokens, c.kvHeads, c.headDim, position - header.positionBase, invFreq);
      } else {
        const positions = new Float64Array(header.tokens);
        for (let t = 0; t < header.tokens; t++) positions[t] = position + t;
        applyRope(target, keys, header.tokens, c.kvHeads, c.headDim, positions, invFreq);
      }
      kv.values[block.layer]!.set(values, position * tokenStride);
    },

    // Writes land in host memory as they are made: nothing is pending.
    async settleKVWrites(cache): Promise<void> {
      own(cache);
    },

    flushKVWrites(cache): void {
      own(cache);
    },

    // Blocks decode through the storage codec, which reads the table from the process's registry.
    useTransformTable: () => undefined,

    async saveKVRows(cache, start, end) {
      const kv = own(cache);
      checkRange(kv, start, end);
      return CpuKVRows.save(kv, start, end);
    },

    async loadKVRows(cache, rows, position) {
      const kv = own(cache);
      if (!(rows instanceof CpuKVRows)) throw new KdnError('INTERNAL', 'saved KV rows do not belong to the cpu backend');
      checkRange(kv, position, position + rows.tokens);
      rows.load(kv, position, c, invFreq);
    },

    async reserveKV(cache, tokens: number): Promise<void> {
      const kv = own(cache);
      checkRange(kv, 0, tokens);
      kv.reserve(tokens);
    },

    async dispose() {},
  };
}
