import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import type { Command } from 'commander';
import { KdnError } from '../../../common/errors.ts';
import { readKVObject } from '../../../storage/kv-object/index.ts';
import { UsageError } from '../exit-codes.ts';

/**
 * `kdn inspect <file>`: prints a KV object's header as JSON, then streams the payload through the verifying
 * reader (every layer checksum and the lz4 framing), so a large object is checked without loading it whole.
 */
async function inspect(file: string): Promise<void> {
  let size: number;
  try {
    const info = await stat(file);
    if (!info.isFile()) throw new UsageError(`${file} is not a regular file`, 'give the path of a KV object file');
    size = info.size;
  } catch (err) {
    if (err instanceof KdnError) throw err;
    throw new UsageError(`cannot read ${file}: ${(err as Error).message}`, 'give the path of a KV object file', 'NOT_FOUND');
  }
  const reader = await readKVObject(createReadStream(file));
  process.stdout.write(`${JSON.stringify({ file, bytes: size, header: reader.header }, null, 2)}\n`);
  let layers = 0;
  for await (const block of reader.layers) layers = block.layer + 1;
  process.stdout.write(`checksum ok: ${layers} layers verified\n`);
}

export function register(program: Command): void {
  program
    .command('inspect')
    .description('print a KV object header as JSON and verify its checksums')
    .argument('<file>', 'KV object file')
    .action(inspect);
}
