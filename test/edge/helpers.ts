import { createHash } from 'node:crypto';
import { request, type IncomingHttpHeaders } from 'node:http';
import type { Readable } from 'node:stream';
import { EDGE_TOKEN_TTL_S, bodyDigest, newNonce, signEdgeToken } from '../../common/edge-token.ts';
import { EDGE_HEADERS } from '../../edge/protocol.ts';
import { encodeKVObject } from '../../storage/kv-object/index.ts';
import type { ByteRange, ObjectInfo, ObjectStore, ObjectStream, PutOptions } from '../../storage/object-store.ts';

/** Bytes per token of the objects below: 2 layers x (keys + values) x 2 heads x 16 dims x 2 bytes (fp16). */
export const BYTES_PER_TOKEN = 2 * 2 * 2 * 16 * 2;

/** A small valid fp16 KV object whose content depends on `seed`; its size is about tokens * BYTES_PER_TOKEN. */
export function makeKVObject(seed: number, tokens = 16): Buffer {
  const layers = 2;
  const kvHeads = 2;
  const headDim = 16;
  const perLayer = Array.from({ length: layers }, (_, layer) => {
    const keys = new Float32Array(tokens * kvHeads * headDim);
    const values = new Float32Array(tokens * kvHeads * headDim);
    for (let i = 0; i < keys.length; i += 1) {
      keys[i] = Math.sin(seed * 7.13 + layer * 1.7 + i * 0.011);
      values[i] = Math.cos(seed * 3.31 + layer * 0.9 + i * 0.017);
    }
    return { keys, values };
  });
  return encodeKVObject(
    { layers, kvHeads, headDim, tokens, positionBase: 0, ropeApplied: true, perLayer },
    {
      modelFingerprint: 'edge-test-model',
      tokenIds: Array.from({ length: tokens }, (_, i) => (seed * 31 + i) % 50_000),
      codec: { name: 'fp16', lz4: false },
    },
  );
}

export function sha256(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

/**
 * Wraps a real ObjectStore to count the origin reads an edge makes (and optionally slow them down), so tests can
 * check coalescing and timeouts at the origin. Everything else passes straight through.
 */
export class CountingStore implements ObjectStore {
  readonly inner: ObjectStore;
  gets = 0;
  puts = 0;
  deletes = 0;
  /** Added to every get, to hold misses in flight or to outlast the edge's origin timeout. */
  delayMs = 0;

  constructor(inner: ObjectStore) {
    this.inner = inner;
  }

  get description(): string {
    return `counting(${this.inner.description})`;
  }

  /** Reads first, then holds the answer for `delayMs`: what it returns is the object as it was when asked. */
  async get(key: string, options?: { signal?: AbortSignal }): Promise<Buffer> {
    this.gets += 1;
    const delayMs = this.delayMs;
    const body = await this.inner.get(key, options);
    if (delayMs > 0) await new Promise((resolve) => setTimeout(resolve, delayMs));
    return body;
  }

  getStream(key: string, options?: { range?: ByteRange; signal?: AbortSignal }): Promise<ObjectStream> {
    this.gets += 1;
    return this.inner.getStream(key, options);
  }

  put(key: string, body: Buffer | Uint8Array | Readable, options?: PutOptions): Promise<ObjectInfo> {
    this.puts += 1;
    return this.inner.put(key, body, options);
  }

  head(key: string): Promise<ObjectInfo | null> {
    return this.inner.head(key);
  }

  delete(key: string): Promise<boolean> {
    this.deletes += 1;
    return this.inner.delete(key);
  }

  list(prefix: string): AsyncIterable<ObjectInfo> {
    return this.inner.list(prefix);
  }

  close(): Promise<void> {
    return this.inner.close();
  }
}

export interface RawResponse {
  status: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
}

/**
 * One HTTP request with node:http, sending the path exactly as given (fetch would normalize "a/../b" away) and
 * reading the whole answer.
 */
export function httpRequest(
  base: string,
  method: string,
  path: string,
  options: { headers?: Record<string, string>; body?: Uint8Array | string; chunked?: boolean } = {},
): Promise<RawResponse> {
  const { hostname, port } = new URL(base);
  return new Promise((resolve, reject) => {
    const headers: Record<string, string> = { ...options.headers };
    if (options.body !== undefined && !options.chunked) headers['content-length'] = String(Buffer.byteLength(options.body));
    const req = request({ host: hostname, port, method, path, headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
      res.on('error', reject);
    });
    req.on('error', reject);
    if (options.body !== undefined && options.chunked) {
      const body = Buffer.from(options.body);
      for (let i = 0; i < body.length; i += 16_384) req.write(body.subarray(i, i + 16_384));
      req.end();
    } else {
      req.end(options.body);
    }
  });
}

/** The secret the edges of these tests check request tokens with. */
export const TEST_EDGE_SECRET = 'edge-test-secret-0123456789abcdef';

/**
 * The headers kdn would send for `method` on `path` (the request target, query string included): a token signed
 * with TEST_EDGE_SECRET, and for a PUT the digest of `body`, which the token signs.
 */
export function tokenHeader(method: string, path: string, secret = TEST_EDGE_SECRET, body?: Uint8Array | string): Record<string, string> {
  const digest = method === 'PUT' && body !== undefined ? bodyDigest(body) : undefined;
  const token = signEdgeToken(secret, {
    method,
    target: path,
    expiry: Math.floor(Date.now() / 1000) + EDGE_TOKEN_TTL_S,
    nonce: newNonce(),
    ...(digest ? { bodyDigest: digest } : {}),
  });
  return { [EDGE_HEADERS.token]: token, ...(digest ? { [EDGE_HEADERS.bodyDigest]: digest } : {}) };
}

/** httpRequest with a valid edge token for the request. */
export function signedRequest(
  base: string,
  method: string,
  path: string,
  options: { headers?: Record<string, string>; body?: Uint8Array | string; chunked?: boolean } = {},
): Promise<RawResponse> {
  return httpRequest(base, method, path, {
    ...options,
    headers: { ...tokenHeader(method, path, TEST_EDGE_SECRET, options.body), ...options.headers },
  });
}

/** The error code of a JSON error body. */
export function errorCode(response: RawResponse): string | undefined {
  try {
    return (JSON.parse(response.body.toString('utf8')) as { error?: { code?: string } }).error?.code;
  } catch {
    return undefined;
  }
}
