import { createHash } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Rng } from './rng.ts';

/** Inverts `flips` bytes at random offsets of a file in place; returns the offsets. */
export async function flipBytes(file: string, flips: number, rng: Rng): Promise<number[]> {
  const body = await readFile(file);
  const offsets = new Set<number>();
  while (offsets.size < Math.min(flips, body.length)) offsets.add(rng.int(body.length));
  for (const offset of offsets) body[offset] = body[offset]! ^ 0xff;
  await writeFile(file, body);
  return [...offsets].sort((a, b) => a - b);
}

/** Where a file origin (`file:<root>`) keeps an object. */
export function originFile(originRoot: string, key: string): string {
  return join(originRoot, 'objects', ...key.split('/'));
}

/** Where an edge's disk tier keeps an object (edge/server/disk-tier.ts names files by the key's sha256). */
export function edgeDiskFile(diskPath: string, key: string): string {
  const hash = createHash('sha256').update(key).digest('hex');
  return join(diskPath, 'objects', hash.slice(0, 2), hash);
}
