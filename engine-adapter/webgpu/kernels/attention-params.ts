import { Params } from '../gpu-context.ts';
import type { AttentionArgs } from './attention.ts';

/** The uniform fields both attention kernels' Params structs start with (each adds `splits`). */
export function attentionParams(a: AttentionArgs): Params {
  return new Params()
    .u32(a.tokens)
    .u32(a.heads)
    .u32(a.kvHeads)
    .u32(a.headDim)
    .u32(a.posBase)
    .u32(a.window ?? 0)
    .f32(1 / Math.sqrt(a.headDim));
}
