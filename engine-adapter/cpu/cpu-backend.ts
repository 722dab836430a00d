import { KdnError } from '../../common/errors.ts';
import type { KVHeader, KVBlock, KVTensors } from '../../storage/kv-object/types.ts';
import { layerBlockOf } from '../../storage/kv-object/index.ts';
import {
  checkedBatch,
  type BatchSequence,
  type BlendOutput,
  type BlendPlan,
  type ForwardBackend,
  type KVCacheHandle,
  type KVRows,
} from '../backend.ts';
import { noKvWrites, type KvWriteWork } from '../engine-work.ts';
import type { LayerGate } from '../layer-gates.ts';
import type { ModelConfig } from '../model/config.ts';
import type { ModelWeights } from '../model/weights.ts';
import { cpuBatchForward } from './batch-forward.ts';
import { cpuBlendForward, cpuForward } from './forward.ts';
import { applyRope, rerotate, ropeInvFreq } from './kernels/rope.ts';
import { CpuKVCache } from './kv-cache.ts';
import { CpuKVRows } from './cpu-kv-rows.ts';

/**
 * The float32 TypeScript reference backend: every kernel in plain code, the KV cache in host arrays. Slow, but
 * the ground truth the WebGPU backend is tested against.
 */
export function createCpuBackend(weights: ModelWeights): ForwardBackend {
  return new CpuBackend(weights);
}

export class CpuBackend implements ForwardBackend {
  readonly name = 'cpu';
  readonly device = 'CPU reference (float32 TypeScript)';
  private readonly c: ModelConfig;
  private readonly invFreq: Float32Array;
  private readonly tokenStride: number;
  private readonly writes = noKvWrites();

  constructor(private readonly weights: ModelWeights) {
    this.c = weights.config;
    this.invFreq = ropeInvFreq(this.c);
    this.tokenStride = this.c.kvHeads * this.c.headDim;
  }

  createKVCache(capacity: number): KVCacheHandle {
    return new CpuKVCache(capacity, this.c.layers, this.tokenStride);
  }

  async forward(
    cache: KVCacheHandle,
    tokens: Uint32Array,
    position: number,
    logits: 'last' | 'all' | 'none',
    gate?: LayerGate,
  ): Promise<Float32Array> {
    const kv = this.own(cache);
    this.checkRange(kv, position, position + tokens.length);
    // The reference computes on the event loop, so nothing would overlap: it waits for the whole context instead.
    if (gate) for (let l = 0; l < this.c.layers; l++) await gate(l);
    return cpuForward(this.weights, this.invFreq, kv, tokens, position, logits);
  }

  async batchForward(sequences: readonly BatchSequence[]): Promise<Float32Array[]> {
    const checked = checkedBatch(
      sequences,
      (cache) => this.own(cache),
      (kv, tokens, position) => this.checkRange(kv, position, position + tokens.length),
    );
    return cpuBatchForward(this.weights, this.invFreq, checked);
  }

  async blendForward(
    cache: KVCacheHandle,
    tokens: Uint32Array,
    position: number,
    plan: BlendPlan,
    logits: 'last' | 'none',
    gate?: LayerGate,
  ): Promise<BlendOutput> {
    const kv = this.own(cache);
    this.checkRange(kv, position, position + tokens.length);
    if (gate) for (let l = 0; l < this.c.layers; l++) await gate(l);
    return cpuBlendForward(this.weights, this.invFreq, kv, tokens, position, plan, logits);
  }

  async readKV(cache: KVCacheHandle, start: number, end: number): Promise<KVTensors> {
    const kv = this.own(cache);
    this.checkRange(kv, start, end);
    kv.reserve(end);
    const { c, tokenStride } = this;
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
  }

  async writeKVLayer(cache: KVCacheHandle, header: KVHeader, given: KVBlock, position: number): Promise<void> {
    const began = performance.now();
    const block = layerBlockOf(header, given);
    if (given.encoded === undefined) this.writes.readBlocks++;
    const kv = this.own(cache);
    const { c, tokenStride } = this;
    if (block.layer < 0 || block.layer >= c.layers)
      throw new KdnError('KV_MISMATCH', `KV layer ${block.layer} does not exist in a ${c.layers}-layer model`);
    this.checkRange(kv, position, position + header.tokens);
    const { keys, values } = block.decode();
    const size = header.tokens * tokenStride;
    if (keys.length !== size || values.length !== size) {
      throw new KdnError(
        'KV_MISMATCH',
        `KV layer ${block.layer} holds ${keys.length} keys and ${values.length} values, expected ${size} each`,
      );
    }
    kv.reserve(position + header.tokens);
    const target = kv.keys[block.layer]!.subarray(position * tokenStride, position * tokenStride + size);
    this.writes.blocks++;
    this.writes.bytes += block.encoded.byteLength;
    if (header.ropeApplied) {
      rerotate(target, keys, header.tokens, c.kvHeads, c.headDim, position - header.positionBase, this.invFreq);
    } else {
      const positions = new Float64Array(header.tokens);
      for (let t = 0; t < header.tokens; t++) positions[t] = position + t;
      applyRope(target, keys, header.tokens, c.kvHeads, c.headDim, positions, this.invFreq);
    }
    kv.values[block.layer]!.set(values, position * tokenStride);
    this.writes.stageSeconds += (performance.now() - began) / 1000;
  }

  kvWrites(): KvWriteWork {
    return { ...this.writes };
  }

  // Writes land in host memory as they are made: nothing is pending.
  async settleKVWrites(cache: KVCacheHandle): Promise<void> {
    this.own(cache);
  }

  async flushKVWrites(cache: KVCacheHandle): Promise<void> {
    this.own(cache);
  }

  // Blocks decode through the storage codec, which reads the table from the process's registry.
  useTransformTable(): void {}

  async saveKVRows(cache: KVCacheHandle, start: number, end: number): Promise<KVRows> {
    const kv = this.own(cache);
    this.checkRange(kv, start, end);
    return CpuKVRows.save(kv, start, end);
  }

  async loadKVRows(cache: KVCacheHandle, rows: KVRows, position: number): Promise<void> {
    const kv = this.own(cache);
    if (!(rows instanceof CpuKVRows)) throw new KdnError('INTERNAL', 'saved KV rows do not belong to the cpu backend');
    this.checkRange(kv, position, position + rows.tokens);
    rows.load(kv, position, this.c, this.invFreq);
  }

  async reserveKV(cache: KVCacheHandle, tokens: number): Promise<void> {
    const kv = this.own(cache);
    this.checkRange(kv, 0, tokens);
    kv.reserve(tokens);
  }

  async dispose(): Promise<void> {}

  private own(cache: KVCacheHandle): CpuKVCache {
    if (!(cache instanceof CpuKVCache)) throw new KdnError('INTERNAL', 'KV cache handle does not belong to the cpu backend');
    return cache;
  }

  private checkRange(cache: CpuKVCache, start: number, end: number): void {
    if (!Number.isInteger(start) || !Number.isInteger(end) || start < 0 || end < start || end > cache.capacity) {
      throw new KdnError('INVALID_ARGUMENT', `KV range [${start}, ${end}) is outside the cache (capacity ${cache.capacity})`);
    }
  }
}
