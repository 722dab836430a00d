import {
  DeleteObjectCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  type ListObjectsV2CommandOutput,
  PutObjectCommand,
  S3Client,
  type GetObjectCommandOutput,
} from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { Readable, addAbortSignal } from 'node:stream';
import { KdnError } from '../common/errors.ts';
import { checkRange, describeRange } from './byte-range.ts';
import { isValidKey, validateKey, validatePrefix } from './keys.ts';
import type { ByteRange, ObjectInfo, ObjectStore, ObjectStream, PutOptions } from './object-store.ts';

export interface S3Credentials {
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken?: string;
}

export interface S3StoreOptions {
  bucket: string;
  /** Key prefix inside the bucket ('' or ending in '/'); keys of this store live below it. */
  prefix?: string;
  /** S3-compatible endpoint such as http://127.0.0.1:9000; AWS itself when omitted. */
  endpoint?: string;
  /** Default: AWS_REGION (or AWS_DEFAULT_REGION) from the environment, else us-east-1. */
  region?: string;
  /** Omitted: the SDK's default chain (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, profiles, instance roles). */
  credentials?: S3Credentials;
  /** Default true: path-style URLs work with any endpoint, with no wildcard DNS needed. */
  forcePathStyle?: boolean;
  /** Bound on connecting and on any silence while a request or response is under way. Default 10 s. */
  timeoutMs?: number;
  /** Tries per request, the first included (the SDK retries transient failures). Default 2. */
  maxAttempts?: number;
  /** ListObjectsV2 page size, at most 1000. */
  listPageSize?: number;
  /** Multipart part size, at least 5 MiB (S3's minimum). Default 8 MiB. */
  partSize?: number;
  /** Buffers larger than this go up as multipart. Streams always go through multipart upload, which sends a single
   * PUT when the stream ends within the first part. Default: `partSize`. */
  multipartThreshold?: number;
  /** Parts uploaded at once. Default 4. */
  uploadConcurrency?: number;
}

const MIB = 1024 * 1024;
const MIN_PART_SIZE = 5 * MIB;

/**
 * Object store on S3 or an S3-compatible server (MinIO, s3rver). Puts are atomic because S3 publishes an object
 * only when its PUT or its CompleteMultipartUpload succeeds; a failed multipart upload is aborted.
 * Every request is bounded by `timeoutMs`, so a dead origin fails with ORIGIN_UNAVAILABLE instead of hanging.
 */
export class S3Store implements ObjectStore {
  readonly description: string;
  private readonly client: S3Client;
  private readonly bucket: string;
  private readonly prefix: string;
  private readonly endpointName: string;
  private readonly listPageSize: number;
  private readonly partSize: number;
  private readonly multipartThreshold: number;
  private readonly uploadConcurrency: number;

  constructor(options: S3StoreOptions) {
    this.bucket = options.bucket;
    this.prefix = options.prefix ?? '';
    if (this.prefix !== '' && !this.prefix.endsWith('/')) this.prefix += '/';
    validatePrefix(this.prefix);
    this.listPageSize = positiveInt(options.listPageSize ?? 1000, 'listPageSize', 1000);
    this.partSize = positiveInt(options.partSize ?? 8 * MIB, 'partSize');
    if (this.partSize < MIN_PART_SIZE) {
      throw new KdnError('INVALID_ARGUMENT', `S3 part size ${this.partSize} is below S3's 5 MiB minimum`, {
        hint: `use a partSize of at least ${MIN_PART_SIZE}`,
      });
    }
    this.multipartThreshold = positiveInt(options.multipartThreshold ?? this.partSize, 'multipartThreshold');
    this.uploadConcurrency = positiveInt(options.uploadConcurrency ?? 4, 'uploadConcurrency');
    const timeoutMs = positiveInt(options.timeoutMs ?? 10_000, 'timeoutMs');
    const region = options.region ?? (process.env.AWS_REGION || process.env.AWS_DEFAULT_REGION || 'us-east-1');
    const endpoint = options.endpoint === undefined ? undefined : cleanEndpoint(options.endpoint);
    this.endpointName = endpoint ?? `AWS S3 (${region})`;
    this.description = `s3://${this.bucket}/${this.prefix}?${endpoint ? `endpoint=${endpoint}&` : ''}region=${region}`;
    this.client = new S3Client({
      region,
      forcePathStyle: options.forcePathStyle ?? true,
      maxAttempts: positiveInt(options.maxAttempts ?? 2, 'maxAttempts'),
      // Checksums only where S3 requires them: S3-compatible servers reject the newer default trailers.
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
      requestHandler: { connectionTimeout: timeoutMs, socketTimeout: timeoutMs, httpAgent: { keepAlive: true } },
      ...(options.endpoint ? { endpoint: options.endpoint } : {}),
      ...(options.credentials ? { credentials: options.credentials } : {}),
    });
  }

  async put(key: string, body: Buffer | Uint8Array | Readable, options: PutOptions = {}): Promise<ObjectInfo> {
    validateKey(key);
    options.signal?.throwIfAborted();
    const Key = this.prefix + key;
    try {
      if (!(body instanceof Readable) && body.byteLength <= this.multipartThreshold) {
        const out = await this.client.send(
          new PutObjectCommand({ Bucket: this.bucket, Key, Body: body, ContentLength: body.byteLength }),
          options.signal ? { abortSignal: options.signal } : {},
        );
        return { key, size: body.byteLength, etag: unquote(out.ETag), lastModified: new Date() };
      }
      let size = body instanceof Readable ? 0 : body.byteLength;
      const counted =
        body instanceof Readable
          ? Readable.from(
              countBytes(body, (n) => (size += n)),
              { objectMode: false },
            )
          : body;
      const upload = new Upload({
        client: this.client,
        params: {
          Bucket: this.bucket,
          Key,
          Body: counted,
          ...(options.contentLength !== undefined ? { ContentLength: options.contentLength } : {}),
        },
        partSize: this.partSize,
        queueSize: this.uploadConcurrency,
        leavePartsOnError: false,
      });
      const onAbort = (): void => void upload.abort();
      options.signal?.addEventListener('abort', onAbort, { once: true });
      try {
        const out = await upload.done();
        // S3 has no LastModified in a PUT answer; the local clock at completion is close and saves a HEAD.
        return { key, size, etag: unquote(out.ETag), lastModified: new Date() };
      } finally {
        options.signal?.removeEventListener('abort', onAbort);
      }
    } catch (err) {
      // Release the caller's body (an upload socket, say) at once rather than when the upload notices.
      if (body instanceof Readable) body.destroy();
      throw this.mapError(err, `put of "${key}"`, key, options.signal);
    }
  }

  async get(key: string, options: { signal?: AbortSignal } = {}): Promise<Buffer> {
    const { stream } = await this.getStream(key, options);
    const chunks: Buffer[] = [];
    for await (const chunk of stream) chunks.push(chunk as Buffer);
    return Buffer.concat(chunks);
  }

  async getStream(key: string, options: { range?: ByteRange; signal?: AbortSignal } = {}): Promise<ObjectStream> {
    validateKey(key);
    const { range, signal } = options;
    if (range) checkRange(range);
    let out: GetObjectCommandOutput;
    try {
      out = await this.client.send(
        new GetObjectCommand({
          Bucket: this.bucket,
          Key: this.prefix + key,
          ...(range ? { Range: `bytes=${describeRange(range)}` } : {}),
        }),
        signal ? { abortSignal: signal } : {},
      );
    } catch (err) {
      throw this.mapError(err, range ? `get of "${key}" bytes ${describeRange(range)}` : `get of "${key}"`, key, signal);
    }
    const body = out.Body;
    if (!(body instanceof Readable)) {
      throw new KdnError('STORAGE_ERROR', `get of "${key}" returned no body stream`, { hint: 'the S3 server answered without a body' });
    }
    let size = out.ContentLength ?? 0;
    let served: { start: number; end: number } | undefined;
    if (range) {
      const parsed = parseContentRange(out.ContentRange);
      if (!parsed) {
        body.destroy();
        throw new KdnError('STORAGE_ERROR', `get of "${key}" bytes ${describeRange(range)}: the server ignored the range`, {
          hint: 'the S3 server must support Range requests',
        });
      }
      if (parsed.start >= parsed.size) {
        // Real S3 answers 416 for any range of an empty object; some S3-compatible servers serve "0-0/0" instead.
        body.destroy();
        throw new KdnError(
          'RANGE_NOT_SATISFIABLE',
          `byte range ${describeRange(range)} starts past the end of a ${parsed.size}-byte object`,
          {
            hint: 'head() the object first to learn its size',
            details: { size: parsed.size },
          },
        );
      }
      size = parsed.size;
      served = { start: parsed.start, end: parsed.end };
    }
    const stream = Readable.from(this.relay(body, key), { objectMode: false });
    if (signal) addAbortSignal(signal, stream);
    const info: ObjectInfo = { key, size, etag: unquote(out.ETag), lastModified: out.LastModified ?? new Date(0) };
    return { info, stream, ...(served ? { range: served } : {}) };
  }

  async head(key: string): Promise<ObjectInfo | null> {
    validateKey(key);
    try {
      const out = await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: this.prefix + key }));
      return { key, size: out.ContentLength ?? 0, etag: unquote(out.ETag), lastModified: out.LastModified ?? new Date(0) };
    } catch (err) {
      const mapped = this.mapError(err, `head of "${key}"`, key);
      if (mapped.code === 'NOT_FOUND') return null;
      throw mapped;
    }
  }

  /** S3's DeleteObject succeeds whether or not the key exists, so a HEAD first tells which it was. */
  async delete(key: string): Promise<boolean> {
    if (!(await this.head(key))) return false;
    try {
      await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: this.prefix + key }));
      return true;
    } catch (err) {
      throw this.mapError(err, `delete of "${key}"`, key);
    }
  }

  async *list(prefix: string): AsyncIterable<ObjectInfo> {
    validatePrefix(prefix);
    let ContinuationToken: string | undefined;
    do {
      let page: ListObjectsV2CommandOutput;
      try {
        page = await this.client.send(
          new ListObjectsV2Command({ Bucket: this.bucket, Prefix: this.prefix + prefix, MaxKeys: this.listPageSize, ContinuationToken }),
        );
      } catch (err) {
        throw this.mapError(err, `list of "${prefix}"`);
      }
      for (const item of page.Contents ?? []) {
        const key = item.Key?.slice(this.prefix.length);
        // Objects put into the bucket by other tools may not be valid keys; this store never serves those.
        if (key === undefined || !isValidKey(key)) continue;
        yield { key, size: item.Size ?? 0, etag: unquote(item.ETag), lastModified: item.LastModified ?? new Date(0) };
      }
      ContinuationToken = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (ContinuationToken);
  }

  async close(): Promise<void> {
    this.client.destroy();
  }

  /** Passes a response body through, turning a failure mid-body (reset, idle timeout) into a KdnError. */
  private async *relay(body: Readable, key: string): AsyncGenerator<Buffer> {
    try {
      for await (const chunk of body) yield chunk as Buffer;
    } catch (err) {
      throw this.mapError(err, `get of "${key}"`, key);
    }
  }

  private mapError(err: unknown, action: string, key?: string, signal?: AbortSignal): KdnError {
    if (err instanceof KdnError) return err;
    if (signal?.aborted) {
      return signal.reason instanceof KdnError
        ? signal.reason
        : new KdnError('STORAGE_ERROR', `${action} was aborted`, { hint: 'the caller cancelled the request', cause: err });
    }
    const name = errorName(err);
    const status = httpStatusOf(err);
    const message = err instanceof Error ? err.message : String(err);
    if (name === 'NoSuchKey' || (status === 404 && name !== 'NoSuchBucket')) {
      return new KdnError('NOT_FOUND', `object "${key ?? ''}" does not exist`, {
        hint: 'list() the prefix to see which keys exist',
        cause: err,
      });
    }
    if (name === 'InvalidRange' || status === 416) {
      return new KdnError('RANGE_NOT_SATISFIABLE', `${action}: range not satisfiable`, {
        hint: 'head() the object first to learn its size',
        cause: err,
      });
    }
    if (isUnreachable(err) || status === 502 || status === 503 || status === 504) {
      return new KdnError('ORIGIN_UNAVAILABLE', `${action} failed: ${this.endpointName} is unreachable (${message})`, {
        hint: 'check that the S3 endpoint is up and reachable from here, and the store URL names the right one',
        cause: err,
      });
    }
    const hint =
      name === 'NoSuchBucket'
        ? `create the bucket "${this.bucket}" first`
        : name === 'AccessDenied' || name === 'InvalidAccessKeyId' || name === 'SignatureDoesNotMatch'
          ? 'check the access key and secret (store URL accessKeyId/secretAccessKey, or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY)'
          : 'see the S3 error code in the message';
    return new KdnError('STORAGE_ERROR', `${action} failed: ${name ?? 'error'}: ${message}`, { hint, cause: err });
  }
}

async function* countBytes(source: Readable, add: (n: number) => void): AsyncGenerator<Buffer> {
  for await (const chunk of source) {
    const buf = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk as Uint8Array);
    add(buf.byteLength);
    yield buf;
  }
}

const NETWORK_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ECONNABORTED',
  'EPIPE',
  'ETIMEDOUT',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EHOSTDOWN',
  'ENETDOWN',
]);

/** Connection-level failures: refused, reset, DNS, or our own timeouts (the SDK names those TimeoutError). */
function isUnreachable(err: unknown): boolean {
  for (let e: unknown = err, depth = 0; e && depth < 4; depth++) {
    if (errorName(e) === 'TimeoutError') return true;
    const code = typeof e === 'object' && 'code' in e ? e.code : undefined;
    if (typeof code === 'string' && NETWORK_CODES.has(code)) return true;
    // Node reports a failed dual-stack connect as an AggregateError whose parts carry the codes.
    e = e instanceof AggregateError ? e.errors[0] : e instanceof Error ? e.cause : undefined;
  }
  return false;
}

function errorName(err: unknown): string | undefined {
  return err instanceof Error ? err.name : undefined;
}

function httpStatusOf(err: unknown): number | undefined {
  if (typeof err !== 'object' || err === null || !('$metadata' in err)) return undefined;
  const meta = err.$metadata;
  return typeof meta === 'object' && meta !== null && 'httpStatusCode' in meta && typeof meta.httpStatusCode === 'number'
    ? meta.httpStatusCode
    : undefined;
}

function parseContentRange(header: string | undefined): { start: number; end: number; size: number } | null {
  const m = header ? /^bytes (\d+)-(\d+)\/(\d+)$/.exec(header) : null;
  return m ? { start: Number(m[1]), end: Number(m[2]), size: Number(m[3]) } : null;
}

/** Checks that the endpoint is an http(s) URL and drops any user:password from it, so it can go into logs. */
function cleanEndpoint(endpoint: string): string {
  let url: URL | null;
  try {
    url = new URL(endpoint);
  } catch {
    url = null;
  }
  if (!url || (url.protocol !== 'http:' && url.protocol !== 'https:')) {
    throw new KdnError('INVALID_ARGUMENT', `S3 endpoint "${endpoint}" is not an http(s) URL`, {
      hint: 'use an endpoint like http://127.0.0.1:9000',
    });
  }
  url.username = '';
  url.password = '';
  return url.href.replace(/\/$/, '');
}

function unquote(etag: string | undefined): string {
  return (etag ?? '').replace(/^(W\/)?"|"$/g, '');
}

function positiveInt(value: number, name: string, max = Number.MAX_SAFE_INTEGER): number {
  if (!Number.isSafeInteger(value) || value < 1 || value > max) {
    throw new KdnError('INVALID_ARGUMENT', `S3 store option ${name} must be an integer from 1 to ${max}, got ${value}`, {
      hint: `fix ${name} in the store options or URL`,
    });
  }
  return value;
}
