import type { Readable } from 'node:stream';
import { KdnError } from '../../common/errors.ts';
import type { KVExpectation, KVHeader, KVLayerBlock, KVObjectReader } from './types.ts';
import { HEADER_HASH_BYTES, PREAMBLE_BYTES, parseHeader, parsePreamble } from './format.ts';
import { checkExpectation } from './header.ts';
import { openLayerBlock, openLayerBlockOffThread } from './layer-block.ts';

/** Where a read's bytes are assembled when they span chunks: a view of exactly `size` bytes, written whole. */
type Allocate = (size: number) => Uint8Array;

// Not zero-filled: every byte is written before it is returned, and a short stream throws instead.
const newBuffer: Allocate = (size) => Buffer.allocUnsafe(size);

/**
 * Pulls exact byte counts out of a chunk stream, holding only the bytes asked for plus the rest of the
 * current chunk (so at most one layer block plus one incoming chunk).
 */
class ExactReader {
  private readonly chunks: AsyncIterator<unknown>;
  private pending: Uint8Array = new Uint8Array(0);

  constructor(source: AsyncIterable<unknown>) {
    this.chunks = source[Symbol.asyncIterator]();
  }

  /** Next chunk, or null at the end of the stream. */
  private async pull(): Promise<Uint8Array | null> {
    const next = await this.chunks.next();
    if (next.done) return null;
    if (!(next.value instanceof Uint8Array)) {
      throw new KdnError('INVALID_ARGUMENT', 'KV object stream must yield bytes (a Readable without an encoding)');
    }
    return next.value;
  }

  /** Exactly `n` bytes; a stream that ends first is a truncated object. */
  async read(n: number, what: string, allocate: Allocate = newBuffer): Promise<Uint8Array> {
    if (this.pending.length >= n) return this.take(n);
    const out = allocate(n);
    out.set(this.pending);
    let filled = this.pending.length;
    this.pending = new Uint8Array(0);
    while (filled < n) {
      const chunk = await this.pull();
      if (chunk === null) {
        throw new KdnError('KV_CORRUPT', `KV object truncated in ${what} (${filled} of ${n} bytes)`, { hint: 'refetch the object' });
      }
      const used = Math.min(chunk.length, n - filled);
      out.set(chunk.subarray(0, used), filled);
      filled += used;
      if (used < chunk.length) this.pending = chunk.subarray(used);
    }
    return out;
  }

  private take(n: number): Uint8Array {
    const out = this.pending.subarray(0, n);
    this.pending = this.pending.subarray(n);
    return out;
  }

  /** Throws unless the stream has no more bytes. */
  async expectEnd(): Promise<void> {
    while (this.pending.length === 0) {
      const chunk = await this.pull();
      if (chunk === null) return;
      this.pending = chunk;
    }
    throw new KdnError('KV_CORRUPT', 'KV object has bytes after its last layer block');
  }

  async close(): Promise<void> {
    await this.chunks.return?.();
  }
}

/**
 * Reads a KV object from a stream: resolves with the verified header as soon as it has arrived, then `layers`
 * yields each layer once its whole block is in and its checksum verified (on the thread pool for large blocks,
 * so parallel streams keep arriving meanwhile; see openLayerBlockOffThread). The last layer is yielded only after
 * the stream has ended cleanly. Any damage throws KV_CORRUPT from the iterator; layers already yielded were
 * intact, but a consumer must drop the whole object when the iteration throws.
 */
export interface ReadKVOptions {
  /**
   * Hash large layer blocks on the shared worker pool (default), or on the calling thread: a reader that already
   * runs on a worker of its own (kdn/query/kv-fetch-worker.ts) hashes where it is.
   */
  hashOffThread?: boolean;
  /**
   * Where a layer block that spans several of the stream's chunks is assembled (default: a new buffer each), e.g.
   * buffers used again (common/reused-buffers.ts). It must return a view of exactly `size` bytes that nothing
   * else uses; the block's bytes, and so the view, go to the consumer.
   */
  receiveInto?: Allocate;
}

export async function readKVObject(
  source: AsyncIterable<Uint8Array> | Readable,
  expect?: KVExpectation,
  options: ReadKVOptions = {},
): Promise<KVObjectReader> {
  const input = new ExactReader(source as AsyncIterable<unknown>);
  let header: KVHeader;
  try {
    const preamble = await input.read(PREAMBLE_BYTES, 'preamble');
    const { version, headerLength } = parsePreamble(preamble);
    const body = await input.read(headerLength, 'header');
    const hash = await input.read(HEADER_HASH_BYTES, 'header checksum');
    header = parseHeader(body, hash, version);
    checkExpectation(header, expect);
  } catch (err) {
    await input.close();
    throw err;
  }
  return { header, layers: layerBlocks(input, header, options.hashOffThread ?? true, options.receiveInto ?? newBuffer) };
}

async function* layerBlocks(input: ExactReader, header: KVHeader, offThread: boolean, into: Allocate): AsyncGenerator<KVLayerBlock> {
  try {
    for (let i = 0; i < header.layers; i++) {
      const size = header.layerOffsets[i + 1]! - header.layerOffsets[i]!;
      const stored = await input.read(size, `layer ${i}`, into);
      const block = offThread ? await openLayerBlockOffThread(header, i, stored) : openLayerBlock(header, i, stored);
      if (i === header.layers - 1) await input.expectEnd();
      yield block;
    }
  } finally {
    await input.close();
  }
}
