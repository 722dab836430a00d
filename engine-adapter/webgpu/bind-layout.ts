/**
 * A kernel's bind group layout, read from its WGSL: every `@group(0) @binding(N) var<...>` it declares, with the
 * uniform parameters at binding 0 taking a dynamic offset.
 *
 * Why not the 'auto' layout: it cannot take dynamic offsets, so a bind group named its dispatch's slot in the
 * uniform buffer, and the same buffers bound from another slot needed another bind group. The slots a dispatch
 * gets vary from query to query (a context's expansions are grouped as its blocks arrive, a gated forward runs as
 * many layers as are placed), so an injected query created most of its bind groups anew: about 280 for an 8B model
 * at 8k tokens, each a Dawn call of tens of microseconds on the engine's thread. With the slot given at
 * setBindGroup, a bind group depends on the buffers alone.
 */
import { KdnError } from '../../common/errors.ts';

const COMPUTE = 0x4;

const BINDING = /@group\(\s*(\d+)\s*\)\s*@binding\(\s*(\d+)\s*\)\s*var\s*<\s*(uniform|storage)\s*(?:,\s*(read|read_write)\s*)?>/g;

/** Entries of the layout `code` declares; `label` names the kernel in errors. */
export function bindLayoutEntries(code: string, label: string): GPUBindGroupLayoutEntry[] {
  const entries: GPUBindGroupLayoutEntry[] = [];
  for (const m of code.matchAll(BINDING)) {
    const [, group, binding, space, access] = m;
    if (group !== '0') throw new KdnError('INTERNAL', `${label}: binds group ${group}; kernels use group 0 only`);
    const n = Number(binding);
    const buffer: GPUBufferBindingLayout =
      space === 'uniform'
        ? { type: 'uniform', hasDynamicOffset: true }
        : { type: access === 'read_write' ? 'storage' : 'read-only-storage' };
    if (space === 'uniform' && n !== 0) throw new KdnError('INTERNAL', `${label}: a uniform at binding ${n}; parameters go at binding 0`);
    entries.push({ binding: n, visibility: COMPUTE, buffer });
  }
  entries.sort((a, b) => a.binding - b.binding);
  if (entries[0]?.binding !== 0 || entries[0].buffer?.type !== 'uniform')
    throw new KdnError('INTERNAL', `${label}: declares no uniform parameters at binding 0`);
  return entries;
}

/** A key equal for layouts with equal entries: kernels binding alike share a layout, and so their bind groups. */
export function layoutKey(entries: readonly GPUBindGroupLayoutEntry[]): string {
  return entries.map((e) => `${e.binding}:${e.buffer!.type}`).join(',');
}
