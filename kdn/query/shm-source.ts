/**
 * The same-host fast path (edge/protocol.ts ShmInfo): a chunk object whose owning edge runs on this host and holds
 * it in its memory tier is read from the edge's shared-memory folder instead of over a socket. The bytes are
 * verified exactly as an HTTP body (readKVObject: header, expectation, every layer's checksum), all before anything
 * is handed on, so a damaged file costs a refetch over HTTP, never a bad injection.
 */
import { lstat, open, readFile, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { toKdnError } from '../../common/errors.ts';
import type { EdgeClient } from '../../edge/client/client.ts';
import { SHM_IDENTITY_FILE, shmObjectName } from '../../edge/protocol.ts';
import { readKVObject } from '../../storage/kv-object/index.ts';
import type { KVExpectation, KVHeader, KVLayerBlock } from '../../storage/kv-object/types.ts';
import type { ReceiveBuffers } from './receive-buffers.ts';

/** How long what an edge said about its shared-memory folder is trusted (an edge restarts with a new folder). */
const PROBE_TTL_MS = 10_000;
/**
 * Bound on asking an edge about its folder: the probe runs before a key's first HTTP request, so an edge that does
 * not answer must not hold that request up for the client's whole timeout (it then fails over as usual).
 */
const PROBE_TIMEOUT_MS = 1_000;
/** Objects larger than this are left to HTTP (kdn objects are tens of MiB). */
const MAX_SHM_OBJECT_BYTES = 2 ** 31 - 1;

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

export interface ShmCounters {
  /** Objects read and verified from shared memory. */
  hits: number;
  /** Keys whose owning edge shares a folder but had no file for them (not cached, or evicted). */
  misses: number;
  /** Files that failed verification or could not be read; their keys went over HTTP. */
  rejected: number;
}

export class ShmSource {
  readonly counters: ShmCounters = { hits: 0, misses: 0, rejected: 0 };
  private readonly probes = new Map<string, { dir: Promise<string | null>; at: number }>();

  /** `buffers`: where files are read into (a fetch thread's, reused once the engine returns them); else fresh ones. */
  constructor(
    private readonly client: EdgeClient,
    private readonly buffers?: ReceiveBuffers,
  ) {}

  /**
   * `key`'s object from its owning edge's shared-memory folder, verified against `expect`; undefined when that
   * edge is on another host, shares no folder, lacks the file, or the file is not a valid object for `expect`.
   */
  async read(key: string, expect: KVExpectation, hashOffThread: boolean): Promise<ShmObject | undefined> {
    const edge = this.client.order(key)[0]!;
    const dir = await this.folderOf(edge);
    if (dir === null) return undefined;
    const allocate = (size: number): Uint8Array => this.buffers?.take(size) ?? Buffer.allocUnsafeSlow(size);
    const bytes = await readWhole(join(dir, shmObjectName(key)), allocate).catch(() => null);
    if (bytes === undefined) {
      this.counters.misses += 1;
      return undefined;
    }
    try {
      if (bytes === null) throw new Error('unreadable');
      const reader = await readKVObject(oneChunk(bytes), expect, { hashOffThread });
      const blocks: KVLayerBlock[] = [];
      for await (const block of reader.layers) blocks.push(block);
      this.counters.hits += 1;
      // The edge never sees this read: a HEAD, after the fact and off the query's path, counts it as a use in its
      // memory tier's LRU (and hit counters), so objects kdn reads this way are not evicted as if cold.
      this.client.head(key).catch(() => undefined);
      return { header: reader.header, blocks, edge, buffer: bytes.buffer as ArrayBuffer, bytes: bytes.length };
    } catch (err) {
      this.counters.rejected += 1;
      this.onReject(key, toKdnError(err).code);
      return undefined;
    }
  }

  /** Called with each rejected key (tests and logs); the key is then fetched over HTTP. */
  onReject: (key: string, code: string) => void = () => undefined;

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

/**
 * The file's bytes in a buffer of their own from `allocate` (transferable whole), or undefined when there is no such
 * file.
 */
async function readWhole(path: string, allocate: (size: number) => Uint8Array): Promise<Uint8Array | undefined> {
  let handle: FileHandle;
  try {
    handle = await open(path, 'r');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
  try {
    const { size } = await handle.stat();
    if (size > MAX_SHM_OBJECT_BYTES) throw new Error(`${path} is ${size} bytes`);
    const bytes = allocate(size);
    for (let at = 0; at < size; ) {
      const { bytesRead } = await handle.read(bytes, at, size - at, at);
      if (bytesRead === 0) throw new Error(`${path} ended at ${at} of ${size} bytes`);
      at += bytesRead;
    }
    return bytes;
  } finally {
    await handle.close();
  }
}

async function* oneChunk(bytes: Uint8Array): AsyncGenerator<Uint8Array> {
  yield bytes;
}
