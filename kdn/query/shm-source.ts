/**
 * The same-host fast path (edge/protocol.ts ShmInfo): a chunk object whose owning edge runs on this host and holds
 * it in its memory tier is read from the edge's shared-memory folder instead of over a socket. The bytes are
 * verified exactly as an HTTP body (header, expectation, every layer's checksum) before they are handed on: the
 * whole file at once (read), or a few layers at a time (open, then readLayers). A damaged file costs a refetch over
 * HTTP, never a bad injection.
 */
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { lstat, open, readFile, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { KdnError, toKdnError } from '../../common/errors.ts';
import type { EdgeClient } from '../../edge/client/client.ts';
import { SHM_IDENTITY_FILE, shmObjectName } from '../../edge/protocol.ts';
import { fileIdentity, kvPayloadOffset, pinPath, readKVHeader, readKVObject } from '../../storage/kv-object/index.ts';
import { openLayerBlock } from '../../storage/kv-object/layer-block.ts';
import type { KVBlockSource, KVExpectation, KVHeader, KVLayerBlock } from '../../storage/kv-object/types.ts';
import type { ReusedBuffers } from '../../common/reused-buffers.ts';

/** How long what an edge said about its shared-memory folder is trusted (an edge restarts with a new folder). */
const PROBE_TTL_MS = 10_000;
/**
 * Bound on asking an edge about its folder: the probe runs before a key's first HTTP request, so an edge that does
 * not answer must not hold that request up for the client's whole timeout (it then fails over as usual).
 */
const PROBE_TIMEOUT_MS = 1_000;
/** Objects larger than this are left to HTTP (kdn objects are tens of MiB). */
const MAX_SHM_OBJECT_BYTES = 2 ** 31 - 1;
/** open's first read: every header of a model with up to a few hundred layers, and no more than a small object. */
const HEAD_READ_BYTES = 64 * 1024;

export interface ShmObject {
  header: KVHeader;
  /** Every layer, verified; their bytes are views of one buffer read from the file (lz4 layers: their own). */
  blocks: KVLayerBlock[];
  /** The edge whose folder held the object. */
  edge: string;
  /** The buffer the file was read into (transferable: no other object shares it; may be longer than the file). */
  buffer: ArrayBuffer;
  bytes: number;
}

/** An object file opened by ShmSource.open: its header read and checked, the payload not yet read. */
export interface ShmFile {
  header: KVHeader;
  edge: string;
  /** Closes the file without reading the rest (verify, finish and fail close it otherwise). */
  close(): Promise<void>;
}

/** Layers [from, next) of an open file, verified; their bytes are views of `buffer` (lz4 layers: their own). */
export interface ShmLayers {
  blocks: KVLayerBlock[];
  buffer: ArrayBuffer;
  next: number;
  /** Bytes of the file read so far, header included. */
  read: number;
}

export interface ShmCounters {
  /** Objects read and verified from shared memory. */
  hits: number;
  /** Keys whose owning edge shares a folder but had no file for them (not cached, or evicted). */
  misses: number;
  /** Files that failed verification or could not be read; their keys went over HTTP. */
  rejected: number;
}

export interface ShmSourceOptions {
  /** Where files are read into (a fetch thread's, reused once the engine returns them); else fresh buffers. */
  buffers?: ReusedBuffers;
  /**
   * Read files with blocking calls on this thread, for a thread that does nothing but fetch. Asynchronous reads
   * run on libuv's pool, whose four threads every thread of the process shares: eight fetch threads reading through
   * it read more slowly than one thread reading by itself.
   */
  blockingReads?: boolean;
}

/** What open keeps of a file: its first bytes (the header, maybe some payload) and where the payload starts. */
interface OpenedFile extends ShmFile {
  file: ObjectFile;
  head: Uint8Array;
  payloadAt: number;
  expect: KVExpectation;
  key: string;
}

export class ShmSource {
  readonly counters: ShmCounters = { hits: 0, misses: 0, rejected: 0 };
  private readonly probes = new Map<string, { dir: Promise<string | null>; at: number }>();

  constructor(
    private readonly client: EdgeClient,
    private readonly options: ShmSourceOptions = {},
  ) {}

  /**
   * `key`'s object from its owning edge's shared-memory folder, verified against `expect`; undefined when that
   * edge is on another host, shares no folder, lacks the file, or the file is not a valid object for `expect`.
   */
  async read(key: string, expect: KVExpectation, hashOffThread: boolean): Promise<ShmObject | undefined> {
    const file = await this.open(key, expect);
    return file && (await this.verify(file, hashOffThread));
  }

  /**
   * Opens `key`'s file and reads only its header, checked against `expect` (undefined as for read), so that a caller
   * can announce the object before reading and hashing its payload, whole with verify or in steps with readLayers.
   */
  async open(key: string, expect: KVExpectation): Promise<ShmFile | undefined> {
    const edge = this.client.order(key)[0]!;
    const dir = await this.folderOf(edge);
    if (dir === null) return undefined;
    let file: ObjectFile | undefined;
    try {
      const path = join(dir, shmObjectName(key));
      file = this.options.blockingReads ? blockingFile(path) : await asyncFile(path);
      if (file === undefined) {
        this.counters.misses += 1;
        return undefined;
      }
      if (file.size > MAX_SHM_OBJECT_BYTES) throw new Error(`${path} is ${file.size} bytes`);
      let head = new Uint8Array(Math.min(file.size, HEAD_READ_BYTES));
      await file.readAt(head, 0);
      const payloadAt = kvPayloadOffset(head);
      if (payloadAt > head.length && payloadAt <= file.size) {
        const longer = new Uint8Array(payloadAt);
        longer.set(head);
        await file.readAt(longer.subarray(head.length), head.length);
        head = longer;
      }
      const header = readKVHeader(head, expect);
      const length = payloadAt + header.layerOffsets[header.layers]!;
      if (file.size !== length) throw new KdnError('KV_CORRUPT', `${path} is ${file.size} bytes, its header says ${length}`);
      const opened: OpenedFile = { header, edge, file, head, payloadAt, expect, key, close: () => file!.close() };
      return opened;
    } catch (err) {
      await file?.close().catch(() => undefined);
      this.reject(key, err);
      return undefined;
    }
  }

  /**
   * Reads the rest of a file from open and verifies every layer (on the hash pool with `hashOffThread`); undefined
   * when it is not a valid object. Closes the file either way.
   */
  async verify(opened: ShmFile, hashOffThread: boolean): Promise<ShmObject | undefined> {
    const { file, head, expect, header, edge } = opened as OpenedFile;
    try {
      const bytes = this.take(file.size);
      bytes.set(head);
      await file.readAt(bytes.subarray(head.length), head.length);
      const reader = await readKVObject(oneChunk(bytes), expect, { hashOffThread });
      const blocks: KVLayerBlock[] = [];
      for await (const block of reader.layers) blocks.push(block);
      await this.finish(opened);
      return { header, blocks, edge, buffer: bytes.buffer as ArrayBuffer, bytes: bytes.length };
    } catch (err) {
      await this.fail(opened, err);
      return undefined;
    }
  }

  /**
   * Reads layers from `from` on of a file from open, as many as fit in `maxBytes` (at least one), into a buffer of
   * their own, and verifies each on this thread. Throws when a layer fails verification or the file cannot be read:
   * the caller then calls fail, and fetches the rest elsewhere.
   */
  async readLayers(opened: ShmFile, from: number, maxBytes: number): Promise<ShmLayers> {
    const { file, header, payloadAt } = opened as OpenedFile;
    const offsets = header.layerOffsets;
    let next = from + 1;
    while (next < header.layers && offsets[next + 1]! - offsets[from]! <= maxBytes) next++;
    const bytes = this.take(offsets[next]! - offsets[from]!);
    await file.readAt(bytes, payloadAt + offsets[from]!);
    const blocks: KVLayerBlock[] = [];
    for (let layer = from; layer < next; layer++) {
      const at = offsets[layer]! - offsets[from]!;
      const length = offsets[layer + 1]! - offsets[layer]!;
      const block = openLayerBlock(header, layer, bytes.subarray(at, at + length));
      // An lz4 layer's bytes are not the file's: only a raw layer can be read again from the file.
      if (!header.codec.lz4) block.source = sourceOf(opened as OpenedFile, layer);
      blocks.push(block);
    }
    return { blocks, buffer: bytes.buffer as ArrayBuffer, next, read: payloadAt + offsets[next]! };
  }

  /**
   * Where every layer of a file from open lies in it, none read or verified yet (FetchPoolOptions.verifyAlongside);
   * undefined for an lz4 file, whose layers are not its bytes.
   */
  sources(opened: ShmFile): KVBlockSource[] | undefined {
    if (opened.header.codec.lz4) return undefined;
    return Array.from({ length: opened.header.layers }, (_, layer) => sourceOf(opened as OpenedFile, layer));
  }

  /** A file read and verified to its end: counted as a hit, and closed. */
  async finish(opened: ShmFile): Promise<void> {
    this.done(opened);
    await opened.close().catch(() => undefined);
  }

  /**
   * A file read and verified to its end, counted as a hit but left open: its blocks' pins (KVBlockSource.pin) name
   * it until the caller closes it.
   */
  done(opened: ShmFile): void {
    const { key } = opened as OpenedFile;
    this.counters.hits += 1;
    // The edge never sees this read: a HEAD, after the fact and off the query's path, counts it as a use in its
    // memory tier's LRU (and hit counters), so objects kdn reads this way are not evicted as if cold.
    this.client.head(key).catch(() => undefined);
  }

  /** A file that could not be read or verified: counted as rejected (onReject hears of it), and closed. */
  async fail(opened: ShmFile, err: unknown): Promise<void> {
    const { file, key } = opened as OpenedFile;
    this.reject(key, err);
    await file.close().catch(() => undefined);
  }

  /** A `size`-byte view at the start of a buffer of its own: a returned one to reuse if there is one. */
  private take(size: number): Uint8Array {
    return this.options.buffers?.take(size) ?? new Uint8Array(Buffer.allocUnsafeSlow(size).buffer, 0, size);
  }

  /** Called with each rejected key (tests and logs); the key is then fetched over HTTP. */
  onReject: (key: string, code: string) => void = () => undefined;

  private reject(key: string, err: unknown): void {
    this.counters.rejected += 1;
    this.onReject(key, toKdnError(err).code);
  }

  /** The edge's folder if it is on this host: the identity file there holds what the edge said over HTTP. */
  private folderOf(edge: string): Promise<string | null> {
    const known = this.probes.get(edge);
    if (known && Date.now() - known.at < PROBE_TTL_MS) return known.dir;
    const dir = this.probe(edge);
    this.probes.set(edge, { dir, at: Date.now() });
    return dir;
  }

  private async probe(edge: string): Promise<string | null> {
    try {
      const info = await this.client.shmInfo(edge, { timeoutMs: PROBE_TIMEOUT_MS });
      if (info.dir === null || info.instance === undefined) return null;
      const stat = await lstat(info.dir);
      if (!stat.isDirectory()) return null;
      const instance = await readFile(join(info.dir, SHM_IDENTITY_FILE), 'utf8');
      return instance === info.instance ? info.dir : null;
    } catch {
      // Another host (no such folder), another user (no access), an edge that does not answer: sockets it is.
      return null;
    }
  }
}

/** Where `layer`'s bytes lie in an opened raw (not lz4) file. */
function sourceOf({ file, header, payloadAt }: OpenedFile, layer: number): KVBlockSource {
  const offsets = header.layerOffsets;
  const position = payloadAt + offsets[layer]!;
  const length = offsets[layer + 1]! - offsets[layer]!;
  return { path: file.path, ...(file.pin ? { pin: file.pin } : {}), identity: file.identity, position, length };
}

/** An open object file, read in ranges into a caller's buffer. */
interface ObjectFile {
  path: string;
  /** block-source.ts pinPath of the open file, where the system has one. */
  pin: string | undefined;
  size: number;
  /** block-source.ts fileIdentity of the open file. */
  identity: string;
  /** Fills all of `into` from the file's bytes at `position` on; a file that ends before that throws. */
  readAt(into: Uint8Array, position: number): Promise<void>;
  close(): Promise<void>;
}

/** `path` read with blocking calls, or undefined when there is no such file. */
function blockingFile(path: string): ObjectFile | undefined {
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
  const stats = fstatSync(fd);
  return {
    path,
    pin: pinPath(fd),
    size: stats.size,
    identity: fileIdentity(stats),
    async readAt(into, position) {
      for (let at = 0; at < into.length; ) at += checkedRead(path, position + at, readSync(fd, into, at, into.length - at, position + at));
    },
    async close() {
      closeSync(fd);
    },
  };
}

/** `path` read through libuv's pool, or undefined when there is no such file. */
async function asyncFile(path: string): Promise<ObjectFile | undefined> {
  let handle: FileHandle;
  try {
    handle = await open(path, 'r');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
  const stats = await handle.stat();
  return {
    path,
    pin: pinPath(handle.fd),
    size: stats.size,
    identity: fileIdentity(stats),
    async readAt(into, position) {
      for (let at = 0; at < into.length; ) {
        at += checkedRead(path, position + at, (await handle.read(into, at, into.length - at, position + at)).bytesRead);
      }
    },
    close: () => handle.close(),
  };
}

/** `read` bytes came from file offset `at`: none means the file ended early (it shrank after its size was taken). */
function checkedRead(path: string, at: number, read: number): number {
  if (read === 0) throw new Error(`${path} ended at ${at} bytes, before the bytes its header names`);
  return read;
}

async function* oneChunk(bytes: Uint8Array): AsyncGenerator<Uint8Array> {
  yield bytes;
}
