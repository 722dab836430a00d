import { createReadStream } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import type { Command } from 'commander';
import { KdnError } from '../../../common/errors.ts';
import { validateHeader } from '../../../storage/kv-object/header.ts';
import { transformLevelName } from '../../../storage/kv-object/codecs/index.ts';
import { LAYER_DIGESTS, codecToString, parseTransformTable, readKVObject, transformTables } from '../../../storage/kv-object/index.ts';
import type { KVHeader } from '../../../storage/kv-object/types.ts';
import { transformTableKey } from '../../../storage/keys.ts';
import { openStore } from '../../../storage/open-store.ts';
import { UsageError } from '../exit-codes.ts';

interface InspectOptions {
  /** A transform table file to check the object against. */
  table?: string;
  /** An origin (e.g. file:/srv/kdn/origin, s3://bucket/prefix) to fetch the object's transform table from. */
  origin?: string;
}

async function fileSize(file: string, what: string): Promise<number> {
  try {
    const info = await stat(file);
    if (!info.isFile()) throw new UsageError(`${file} is not a regular file`, `give the path of a ${what} file`);
    return info.size;
  } catch (err) {
    if (err instanceof KdnError) throw err;
    throw new UsageError(`cannot read ${file}: ${(err as Error).message}`, `give the path of a ${what} file`, 'NOT_FOUND');
  }
}

/** Registers the object's transform table from --table or --origin; says where it came from, or why not. */
async function loadTable(header: KVHeader, options: InspectOptions): Promise<string> {
  const hash = header.codec.table!;
  if (options.table !== undefined) {
    await fileSize(options.table, 'transform table');
    const table = parseTransformTable(await readFile(options.table));
    if (table.hash !== hash) throw new KdnError('KV_MISMATCH', `table ${options.table} is ${table.hash}, the object names ${hash}`);
    transformTables.register(table);
    return options.table;
  }
  if (options.origin === undefined) return 'not loaded (give --table or --origin to check block sizes against it)';
  const origin = openStore(options.origin);
  try {
    const key = transformTableKey(header.modelFingerprint, hash);
    transformTables.register(parseTransformTable(await origin.get(key)));
    return `${options.origin} ${key}`;
  } finally {
    await origin.close();
  }
}

/**
 * `kdn inspect <file>`: prints a KV object's header as JSON with its format version (and the hash its layer checksums
 * use), codec, level and size against fp16, then
 * streams the payload through the verifying reader (every layer checksum and the lz4 framing), so a large object
 * is checked without loading it whole. A transform object is also checked against its table (exact block sizes,
 * model) when the table is given as a file or fetched from an origin.
 */
async function inspect(file: string, options: InspectOptions): Promise<void> {
  const size = await fileSize(file, 'KV object');
  const reader = await readKVObject(createReadStream(file));
  const { header } = reader;
  const fp16Bytes = 4 * header.layers * header.tokens * header.kvHeads * header.headDim;
  const payload = header.layerOffsets[header.layers]!;
  const codec: Record<string, unknown> = { label: codecToString(header.codec), ratioVsFp16: Number((payload / fp16Bytes).toFixed(4)) };
  if (header.codec.name === 'transform') {
    // Named from the header alone, so an object is placed among a chunk's stored levels without its table.
    codec.level = transformLevelName(header.codec.level!);
    codec.table = await loadTable(header, options);
    const table = transformTables.find(header.codec.table!);
    if (table) {
      // The header was read before the table was at hand: validate again, now with exact sizes and the model.
      validateHeader({ ...header });
      codec.level = table.levels[header.codec.level!]?.name;
    }
  }
  const format = { version: header.version, layerChecksums: LAYER_DIGESTS[header.version] };
  process.stdout.write(`${JSON.stringify({ file, bytes: size, format, codec, header }, null, 2)}\n`);
  let layers = 0;
  for await (const block of reader.layers) layers = block.layer + 1;
  process.stdout.write(`checksum ok: ${layers} layers verified\n`);
}

export function register(program: Command): void {
  program
    .command('inspect')
    .description('print a KV object header as JSON (codec, level, size vs fp16) and verify its checksums')
    .argument('<file>', 'KV object file')
    .option('--table <file>', 'transform table file to check a transform object against')
    .option('--origin <url>', "origin to fetch a transform object's table from (file:/path or s3://bucket/prefix)")
    .action(inspect);
}
