import { open, stat, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { KdnError } from '../../common/errors.ts';
import { readModelJson } from './read-json-file.ts';

/**
 * Reads safetensors files: an 8-byte little-endian header length, a JSON header mapping tensor names to
 * { dtype, shape, data_offsets } (offsets relative to the data section after the header), then the data.
 * Every header field is checked against the file size before any read, so a hostile file is MODEL_INVALID, never
 * a crash or a giant allocation. Tensors are read in chunks with async file reads and converted to float32 into
 * their final array, so a model is never held twice.
 */

export type SafetensorsDtype = 'BF16' | 'F16' | 'F32';

const DTYPE_BYTES: Record<SafetensorsDtype, number> = { BF16: 2, F16: 2, F32: 4 };
/** The JSON header of real models is well under this; anything larger is refused before it is allocated. */
const MAX_HEADER_BYTES = 100 * 1024 * 1024;
const CHUNK_BYTES = 8 * 1024 * 1024;

export interface TensorEntry {
  name: string;
  dtype: SafetensorsDtype;
  shape: number[];
  /** The file it lives in and its absolute byte range there. */
  file: string;
  start: number;
  end: number;
}

const entrySchema = z.object({
  dtype: z.string(),
  shape: z.array(z.number().int().nonnegative()),
  data_offsets: z.tuple([z.number().int().nonnegative(), z.number().int().nonnegative()]),
});

function invalid(message: string, cause?: unknown): KdnError {
  return new KdnError('MODEL_INVALID', message, { hint: 'the safetensors file is damaged or not a safetensors file', cause });
}

async function openModelFile(path: string): Promise<FileHandle> {
  try {
    return await open(path, 'r');
  } catch (err) {
    const missing = (err as NodeJS.ErrnoException).code === 'ENOENT';
    throw new KdnError('MODEL_INVALID', missing ? `model file missing: ${path}` : `cannot open model file ${path}`, { cause: err });
  }
}

async function readExactly(fh: FileHandle, target: Uint8Array, position: number, path: string): Promise<void> {
  let done = 0;
  while (done < target.length) {
    const { bytesRead } = await fh.read(target, done, target.length - done, position + done);
    if (bytesRead === 0) throw invalid(`unexpected end of file in ${path}`);
    done += bytesRead;
  }
}

/** Parses and bounds-checks the header of one safetensors file. */
export async function readSafetensorsHeader(path: string): Promise<TensorEntry[]> {
  const fh = await openModelFile(path);
  try {
    const fileSize = (await fh.stat()).size;
    if (fileSize < 8) throw invalid(`${path} is too short to be safetensors (${fileSize} bytes)`);
    const lengthBytes = new Uint8Array(8);
    await readExactly(fh, lengthBytes, 0, path);
    const headerLength = new DataView(lengthBytes.buffer).getBigUint64(0, true);
    if (headerLength > BigInt(Math.min(MAX_HEADER_BYTES, fileSize - 8))) {
      throw invalid(`${path}: header length ${headerLength} exceeds the file (${fileSize} bytes) or the ${MAX_HEADER_BYTES}-byte limit`);
    }
    const headerBytes = new Uint8Array(Number(headerLength));
    await readExactly(fh, headerBytes, 8, path);
    let header: unknown;
    try {
      header = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(headerBytes));
    } catch (err) {
      throw invalid(`${path}: header is not valid UTF-8 JSON`, err);
    }
    if (typeof header !== 'object' || header === null || Array.isArray(header)) throw invalid(`${path}: header is not a JSON object`);
    const dataStart = 8 + headerBytes.length;
    const dataSize = fileSize - dataStart;
    const entries: TensorEntry[] = [];
    for (const [name, value] of Object.entries(header)) {
      if (name === '__metadata__') continue;
      const parsed = entrySchema.safeParse(value);
      if (!parsed.success) throw invalid(`${path}: tensor ${name} has a malformed header entry`);
      const {
        dtype,
        shape,
        data_offsets: [begin, end],
      } = parsed.data;
      if (!(dtype in DTYPE_BYTES)) {
        throw new KdnError('MODEL_UNSUPPORTED', `${path}: tensor ${name} has dtype ${dtype}`, { hint: 'supported dtypes: BF16, F16, F32' });
      }
      const bytes = shape.reduce((a, b) => a * b, 1) * DTYPE_BYTES[dtype as SafetensorsDtype];
      if (begin > end || end > dataSize || end - begin !== bytes) {
        throw invalid(
          `${path}: tensor ${name} data_offsets [${begin}, ${end}] do not match shape [${shape}] ${dtype} within ${dataSize} data bytes`,
        );
      }
      entries.push({ name, dtype: dtype as SafetensorsDtype, shape, file: path, start: dataStart + begin, end: dataStart + end });
    }
    return entries;
  } finally {
    await fh.close();
  }
}

let f16Table: Float32Array | undefined;
/** float16 bit pattern -> float32, all 65536 values (Node 20 has no Float16Array). */
function halfToFloatTable(): Float32Array {
  if (f16Table) return f16Table;
  const table = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const sign = h & 0x8000 ? -1 : 1;
    const exp = (h >> 10) & 0x1f;
    const frac = h & 0x3ff;
    if (exp === 0) table[h] = sign * frac * 2 ** -24;
    else if (exp === 31) table[h] = frac ? NaN : sign * Infinity;
    else table[h] = sign * (1 + frac / 1024) * 2 ** (exp - 15);
  }
  f16Table = table;
  return table;
}

/** Converts little-endian raw values of `dtype` into out[offset..]. `bytes` must hold whole elements. */
export function decodeToFloat32(dtype: SafetensorsDtype, bytes: Uint8Array, out: Float32Array, offset: number): void {
  const count = bytes.length / DTYPE_BYTES[dtype];
  if (dtype === 'F32') {
    new Uint8Array(out.buffer, out.byteOffset + offset * 4, count * 4).set(bytes);
    return;
  }
  // Uint16Array views need 2-byte alignment; our own chunks are aligned, a caller's slice may not be. A copy, not
  // .slice(): on a Buffer that is a view at the same offset.
  const aligned = bytes.byteOffset % 2 === 0 ? bytes : new Uint8Array(bytes);
  const halves = new Uint16Array(aligned.buffer, aligned.byteOffset, count);
  if (dtype === 'BF16') {
    const bits = new Uint32Array(out.buffer, out.byteOffset + offset * 4, count);
    for (let i = 0; i < count; i++) bits[i] = halves[i]! << 16;
  } else {
    const table = halfToFloatTable();
    for (let i = 0; i < count; i++) out[offset + i] = table[halves[i]!]!;
  }
}

/**
 * The safetensors files of one model directory: model.safetensors, or the shards named by
 * model.safetensors.index.json.
 */
export class SafetensorsModel {
  private readonly handles = new Map<string, FileHandle>();
  private readonly chunk = new Uint8Array(CHUNK_BYTES);

  private constructor(readonly tensors: ReadonlyMap<string, TensorEntry>) {}

  static async open(modelDir: string): Promise<SafetensorsModel> {
    const indexPath = join(modelDir, 'model.safetensors.index.json');
    const hasIndex = await stat(indexPath).then(
      () => true,
      () => false,
    );
    const tensors = new Map<string, TensorEntry>();
    if (!hasIndex) {
      for (const e of await readSafetensorsHeader(join(modelDir, 'model.safetensors'))) tensors.set(e.name, e);
      return new SafetensorsModel(tensors);
    }
    const index = z.object({ weight_map: z.record(z.string(), z.string()) }).safeParse(await readModelJson(indexPath));
    if (!index.success) throw new KdnError('MODEL_INVALID', `${indexPath} has no valid weight_map`);
    const shards = [...new Set(Object.values(index.data.weight_map))];
    for (const shard of shards) {
      if (shard.includes('/') || shard.includes('\\') || shard === '..')
        throw new KdnError('MODEL_INVALID', `${indexPath} names shard outside the model directory: ${shard}`);
      for (const e of await readSafetensorsHeader(join(modelDir, shard))) {
        if (tensors.has(e.name)) throw new KdnError('MODEL_INVALID', `tensor ${e.name} appears in more than one shard`);
        tensors.set(e.name, e);
      }
    }
    for (const [name, shard] of Object.entries(index.data.weight_map)) {
      const entry = tensors.get(name);
      if (!entry || entry.file !== join(modelDir, shard))
        throw new KdnError('MODEL_INVALID', `${indexPath} maps ${name} to ${shard}, which does not hold it`);
    }
    return new SafetensorsModel(tensors);
  }

  /** Tensor names in a stable (sorted) order. */
  names(): string[] {
    return [...this.tensors.keys()].sort();
  }

  entry(name: string): TensorEntry | undefined {
    return this.tensors.get(name);
  }

  /**
   * Streams a tensor's raw bytes in chunks of whole elements. Each chunk is a view of a reused buffer: consume it
   * before the next iteration.
   */
  async *rawChunks(entry: TensorEntry): AsyncGenerator<Uint8Array> {
    let fh = this.handles.get(entry.file);
    if (!fh) {
      fh = await openModelFile(entry.file);
      this.handles.set(entry.file, fh);
    }
    for (let pos = entry.start; pos < entry.end; pos += CHUNK_BYTES) {
      const view = this.chunk.subarray(0, Math.min(CHUNK_BYTES, entry.end - pos));
      await readExactly(fh, view, pos, entry.file);
      yield view;
    }
  }

  /** Reads a whole tensor as float32; `onChunk` sees its raw bytes on the way (for fingerprinting). */
  async readFloat32(entry: TensorEntry, onChunk?: (raw: Uint8Array) => void): Promise<Float32Array> {
    const out = new Float32Array((entry.end - entry.start) / DTYPE_BYTES[entry.dtype]);
    let offset = 0;
    for await (const raw of this.rawChunks(entry)) {
      onChunk?.(raw);
      decodeToFloat32(entry.dtype, raw, out, offset);
      offset += raw.length / DTYPE_BYTES[entry.dtype];
    }
    return out;
  }

  async close(): Promise<void> {
    const handles = [...this.handles.values()];
    this.handles.clear();
    await Promise.all(handles.map((h) => h.close()));
  }
}
