import type { Readable } from 'node:stream';

/** Metadata of a stored object. `etag` is stable for identical content on one backend. */
export interface ObjectInfo {
  key: string;
  size: number;
  etag: string;
  lastModified: Date;
}

/** An inclusive byte range, as in HTTP `Range: bytes=start-end`. `end` omitted means to the last byte. */
export interface ByteRange {
  start: number;
  end?: number;
}

export interface ObjectStream {
  info: ObjectInfo;
  /** The range actually served (inclusive), when one was asked for. */
  range?: { start: number; end: number };
  stream: Readable;
}

export interface PutOptions {
  /** Byte length of a streamed body, when known; lets S3 skip multipart for small objects. */
  contentLength?: number;
  signal?: AbortSignal;
}

/**
 * The one object-store contract every part uses. Keys are validated by ./keys.ts (a bad key throws INVALID_KEY),
 * a missing object is NOT_FOUND, backend failures are STORAGE_ERROR (or ORIGIN_UNAVAILABLE when unreachable).
 * `put` is atomic: readers see the old object or the whole new one, never a part.
 */
export interface ObjectStore {
  /** Where the store points, without credentials (for logs and `kdn` status output). */
  readonly description: string;
  put(key: string, body: Buffer | Uint8Array | Readable, options?: PutOptions): Promise<ObjectInfo>;
  get(key: string, options?: { signal?: AbortSignal }): Promise<Buffer>;
  getStream(key: string, options?: { range?: ByteRange; signal?: AbortSignal }): Promise<ObjectStream>;
  /** null when the object does not exist. */
  head(key: string): Promise<ObjectInfo | null>;
  /** true when an object was removed. */
  delete(key: string): Promise<boolean>;
  /** Objects whose key starts with `prefix`, in key order. */
  list(prefix: string): AsyncIterable<ObjectInfo>;
  close(): Promise<void>;
}
