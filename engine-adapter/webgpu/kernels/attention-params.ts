import { Params } from '../gpu-context.ts';
import type { AttentionArgs } from './attention.ts';

/** One past the last key any query row sees. */
export function keyEnd(a: AttentionArgs): number {
  return a.slots ? a.slots.last + 1 : a.posBase + a.tokens;
}

/** The kernel defines and trailing buffers that place query rows at gathered slots. */
export function slotBindings(a: AttentionArgs): { defines: string[]; buffers: GPUBuffer[] } {
  return a.slots ? { defines: ['SLOTS'], buffers: [a.slots.buffer] } : { defines: [], buffers: [] };
}

/** The uniform fields both attention kernels' Params structs start with (each adds `splits`). */
export function attentionParams(a: Pick<AttentionArgs, 'tokens' | 'heads' | 'kvHeads' | 'headDim' | 'posBase' | 'window'>): Params {
  return new Params()
    .u32(a.tokens)
    .u32(a.heads)
    .u32(a.kvHeads)
    .u32(a.headDim)
    .u32(a.posBase)
    .u32(a.window ?? 0)
    .f32(1 / Math.sqrt(a.headDim));
}
