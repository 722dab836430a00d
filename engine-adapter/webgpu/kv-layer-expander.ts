/**
 * How the injector expands verified KV layer blocks into a session's cache: blocks of the same layer of the same
 * cache, codec and length (the chunks of one context) are batched, so one dequantization dispatch (and one
 * re-rotation, for blocks stored at another position or before RoPE) covers many chunks.
 */
import type { KVHeader } from '../../storage/kv-object/types.ts';
import { GPU_EXPANDERS, type ExpandEnv } from './gpu-expanders.ts';
import type { Recorder } from './gpu-context.ts';
import type { GpuKVCache } from './gpu-kv-cache.ts';
import type { Expander, Staged } from './kv-injector.ts';
import { recordRerotate, type RotateJob } from './kernels/rerotate.ts';

/** One verified layer block of a chunk whose header is `header`, going to `position` in `cache`. */
export interface LayerWrite {
  cache: GpuKVCache;
  layer: number;
  header: KVHeader;
  position: number;
}

/** How the keys of a block placed at `position` must turn: not at all when stored rotated at that position. */
function rotation(header: KVHeader, position: number): RotateJob['mode'] | null {
  if (!header.ropeApplied) return { kind: 'positions' };
  const delta = position - header.positionBase;
  return delta === 0 ? null : { kind: 'delta', delta };
}

export function layerExpander(env: ExpandEnv, invFreq: GPUBuffer, shape: { kvHeads: number; headDim: number }): Expander<LayerWrite> {
  const tokenStride = shape.kvHeads * shape.headDim;
  // A cache's buffers do not change while its jobs wait: it grows through the injector's recorder, which records
  // what waits first.
  const cacheIds = new WeakMap<GpuKVCache, number>();
  let nextId = 0;
  const idOf = (cache: GpuKVCache): number => {
    let id = cacheIds.get(cache);
    if (id === undefined) {
      id = nextId++;
      cacheIds.set(cache, id);
    }
    return id;
  };
  return {
    batchKey: ({ cache, layer, header }) =>
      `${idOf(cache)}/${layer}/${header.tokens}/${header.codec.name}/${GPU_EXPANDERS[header.codec.name].key(header.codec)}`,
    record(rec: Recorder, src: GPUBuffer, batch: readonly Staged<LayerWrite>[]): void {
      const { cache, layer, header } = batch[0]!.job;
      const jobs = batch.map((s) => ({ srcOffset: s.offset, dstOffset: s.job.position * tokenStride }));
      GPU_EXPANDERS[header.codec.name].record(env, rec, {
        src,
        keys: cache.keys[layer]!,
        values: cache.values[layer]!,
        layer,
        spec: header.codec,
        tokens: header.tokens,
        kvHeads: shape.kvHeads,
        headDim: shape.headDim,
        jobs,
      });
      const rotations: RotateJob[] = [];
      for (const { job } of batch) {
        const mode = rotation(job.header, job.position);
        if (mode !== null) rotations.push({ start: job.position, mode });
      }
      if (rotations.length === 0) return;
      const { kvHeads, headDim } = shape;
      recordRerotate(env.ctx, rec, { cache: cache.keys[layer]!, invFreq, tokens: header.tokens, kvHeads, headDim, jobs: rotations });
    },
  };
}
