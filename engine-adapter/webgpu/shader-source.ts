/**
 * Loads a kernel's WGSL from beside its launcher and applies the two things WGSL lacks: `#include "file.wgsl"`
 * (shared helpers such as the RoPE angle) and `#if NAME` / `#else` / `#endif` blocks for variants that change
 * binding types (f16-packed versus f32 weights), which override constants cannot do.
 */
import { readFileSync } from 'node:fs';
import { KdnError } from '../../common/errors.ts';

const cache = new Map<string, string>();

function read(url: URL): string {
  const key = url.href;
  let text = cache.get(key);
  if (text === undefined) {
    text = readFileSync(url, 'utf8');
    cache.set(key, text);
  }
  return text;
}

export function shaderSource(url: URL, defines: ReadonlySet<string> = new Set()): string {
  const out: string[] = [];
  // Each entry: whether the enclosing block is emitted, and whether its #if branch was taken.
  const stack: { emit: boolean; taken: boolean }[] = [];
  const emitting = (): boolean => stack.every((s) => s.emit);
  for (const line of read(url).split('\n')) {
    const t = line.trim();
    const ifMatch = /^#if\s+(\w+)$/.exec(t);
    if (ifMatch) {
      const taken = defines.has(ifMatch[1]!);
      stack.push({ emit: taken, taken });
    } else if (t === '#else') {
      const top = stack.at(-1);
      if (!top) throw new KdnError('INTERNAL', `${url.pathname}: #else without #if`);
      top.emit = !top.taken;
    } else if (t === '#endif') {
      if (!stack.pop()) throw new KdnError('INTERNAL', `${url.pathname}: #endif without #if`);
    } else if (t.startsWith('#include')) {
      const name = /^#include\s+"([^"]+)"$/.exec(t)?.[1];
      if (!name) throw new KdnError('INTERNAL', `${url.pathname}: bad include: ${t}`);
      if (emitting()) out.push(shaderSource(new URL(name, url), defines));
    } else if (emitting()) {
      out.push(line);
    }
  }
  if (stack.length > 0) throw new KdnError('INTERNAL', `${url.pathname}: unterminated #if`);
  return out.join('\n');
}

/** A kernel's name in profiles and tools: its WGSL file's name and its defines ("matmul-subgroup-matrix W_BLOCKS"). */
export function kernelLabel(url: URL, defines: readonly string[]): string {
  const file = url.pathname.slice(url.pathname.lastIndexOf('/') + 1).replace(/\.wgsl$/, '');
  return [file, ...defines].join(' ');
}
