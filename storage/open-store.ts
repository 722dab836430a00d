import { fileURLToPath } from 'node:url';
import { KdnError, isKdnError } from '../common/errors.ts';
import { FsStore, type FsStoreOptions } from './fs-store.ts';
import { validatePrefix } from './keys.ts';
import type { ObjectStore } from './object-store.ts';
import { S3Store, type S3StoreOptions } from './s3-store.ts';

export interface OpenStoreOptions {
  fs?: FsStoreOptions;
  /** Tuning for s3:// stores; a `timeoutMs` in the URL wins over the one here. */
  s3?: Pick<S3StoreOptions, 'timeoutMs' | 'maxAttempts' | 'listPageSize' | 'partSize' | 'multipartThreshold' | 'uploadConcurrency'>;
}

const FORMS =
  'accepted forms: "file:./data", "file:/abs/path", "file:///abs/path", a plain path like "./data" or "/abs/path", ' +
  'or "s3://bucket/optional/prefix?endpoint=http://127.0.0.1:9000&region=us-east-1&accessKeyId=KEY&secretAccessKey=SECRET&forcePathStyle=true" ' +
  '(every query parameter optional; credentials default to AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY)';

const S3_PARAMS = ['endpoint', 'region', 'accessKeyId', 'secretAccessKey', 'sessionToken', 'forcePathStyle', 'timeoutMs'] as const;
const SECRET_PARAMS = new Set(['secretAccessKey', 'sessionToken']);

/** Opens the object store a URL-like setting names: a filesystem folder or an S3 bucket (see FORMS). */
export function openStore(url: string, options: OpenStoreOptions = {}): ObjectStore {
  if (typeof url !== 'string' || url.trim() === '') throw badUrl(String(url), 'the store URL is empty');
  if (url.startsWith('s3://')) return openS3(url, options);
  if (url.startsWith('file:')) return new FsStore(filePath(url), options.fs);
  const scheme = /^([A-Za-z][A-Za-z0-9+.-]*):/.exec(url);
  if (scheme) throw badUrl(url, `unknown store scheme "${scheme[1]}:"`);
  return new FsStore(url, options.fs);
}

function filePath(url: string): string {
  const rest = url.slice('file:'.length);
  if (rest.startsWith('//')) {
    if (!rest.startsWith('///')) throw badUrl(url, 'file URLs with a host are not supported');
    return fileURLToPath(url);
  }
  if (rest === '') throw badUrl(url, 'the file store needs a folder');
  return rest;
}

function openS3(url: string, options: OpenStoreOptions): ObjectStore {
  const { bucket, prefix, query } = s3Location(url);
  try {
    return new S3Store({ ...options.s3, bucket, prefix, ...s3Settings(url, query) });
  } catch (err) {
    // The store checks the endpoint and tuning values; say so in terms of the URL.
    if (isKdnError(err, 'INVALID_ARGUMENT')) throw badUrl(url, err.message);
    throw err;
  }
}

/** The bucket and key prefix an s3:// URL names, and its query. */
function s3Location(url: string): { bucket: string; prefix: string; query: URLSearchParams } {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw badUrl(url, 'it does not parse as a URL');
  }
  if (parsed.username || parsed.password)
    throw badUrl(url, 'credentials go in the query (accessKeyId, secretAccessKey), not before the bucket');
  const bucket = parsed.hostname;
  if (!/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/.test(bucket)) throw badUrl(url, `"${bucket}" is not a valid bucket name (3-63 of a-z 0-9 . -)`);
  // From the raw text: URL parsing would quietly resolve "..", turning "s3://b/../x" into the prefix "x".
  const rawPath = url.slice('s3://'.length).split(/[?#]/)[0]!;
  const prefix = safeDecode(rawPath.includes('/') ? rawPath.slice(rawPath.indexOf('/') + 1) : '');
  try {
    validatePrefix(prefix);
  } catch {
    throw badUrl(url, `the key prefix "${prefix}" is not a valid key prefix`);
  }
  return { bucket, prefix, query: parsed.searchParams };
}

/** The store settings an s3:// URL's query gives (S3_PARAMS), each checked. */
function s3Settings(url: string, query: URLSearchParams): Omit<S3StoreOptions, 'bucket' | 'prefix'> {
  for (const name of query.keys()) {
    if (!(S3_PARAMS as readonly string[]).includes(name)) throw badUrl(url, `unknown parameter "${name}" (known: ${S3_PARAMS.join(', ')})`);
  }
  const param = (name: (typeof S3_PARAMS)[number]): string | undefined => query.get(name) ?? undefined;
  const accessKeyId = param('accessKeyId');
  const secretAccessKey = param('secretAccessKey');
  if ((accessKeyId === undefined) !== (secretAccessKey === undefined)) {
    throw badUrl(url, 'give both accessKeyId and secretAccessKey, or neither (to use the environment)');
  }
  const sessionToken = param('sessionToken');
  const forcePathStyle = param('forcePathStyle');
  if (forcePathStyle !== undefined && forcePathStyle !== 'true' && forcePathStyle !== 'false') {
    throw badUrl(url, 'forcePathStyle must be true or false');
  }
  const timeoutMs = param('timeoutMs');
  if (timeoutMs !== undefined && !/^[1-9]\d*$/.test(timeoutMs)) throw badUrl(url, 'timeoutMs must be a whole number of milliseconds');
  const endpoint = param('endpoint');
  const region = param('region');
  return {
    ...(endpoint !== undefined ? { endpoint } : {}),
    ...(region !== undefined ? { region } : {}),
    ...(accessKeyId !== undefined && secretAccessKey !== undefined
      ? { credentials: { accessKeyId, secretAccessKey, ...(sessionToken !== undefined ? { sessionToken } : {}) } }
      : {}),
    ...(forcePathStyle !== undefined ? { forcePathStyle: forcePathStyle === 'true' } : {}),
    ...(timeoutMs !== undefined ? { timeoutMs: Number(timeoutMs) } : {}),
  };
}

function safeDecode(text: string): string {
  try {
    return decodeURIComponent(text);
  } catch {
    return text;
  }
}

function badUrl(url: string, why: string): KdnError {
  return new KdnError('INVALID_ARGUMENT', `bad store URL "${redact(url)}": ${why}`, { hint: FORMS });
}

/** The URL with secrets (query values, user:password) masked, for error messages. */
function redact(url: string): string {
  return url
    .replace(/^(s3:\/\/)[^/@]*@/, '$1***@')
    .replace(/([?&])([^=&]+)=([^&]*)/g, (whole, sep: string, name: string) => (SECRET_PARAMS.has(name) ? `${sep}${name}=***` : whole));
}
