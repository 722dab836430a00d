import { createHash } from 'node:crypto';
import type { CodecSpec } from '../storage/kv-object/types.ts';
import { tokenHash } from '../storage/kv-object/index.ts';

/**
 * The one place knowledge object keys are made. Chunk KV keys are content addresses: the same tokens under the
 * same model, codec and salt always give the same key, so re-running an upload finds finished chunks with a HEAD.
 */

/** What every chunk key of one store depends on besides the tokens. */
export interface KeyScope {
  modelFingerprint: string;
  codec: CodecSpec;
  /** Separates caches that must not share entries (one salt per tenant); '' shares by content. */
  salt: string;
}

/**
 * A codec as a key segment: "int8", "int8-lz4", "int4-g32-lz4", "transform-l2-t<first 16 hex of the table>"
 * (segments may not contain '+'); objects of another transform table or level get other keys.
 */
export function codecLabel(codec: CodecSpec): string {
  return [
    codec.name,
    ...(codec.groupSize === undefined ? [] : [`g${codec.groupSize}`]),
    ...(codec.level === undefined ? [] : [`l${codec.level}`]),
    ...(codec.table === undefined ? [] : [`t${codec.table.slice(0, 16)}`]),
    ...(codec.lz4 ? ['lz4'] : []),
  ].join('-');
}

function digest(parts: string[]): string {
  const hash = createHash('sha256');
  for (const part of parts) hash.update(part).update('\0');
  return hash.digest('hex');
}

/**
 * The prefix every chunk key of one salt (one tenant, or the shared namespaces) starts with. An edge token scoped
 * to it (a warm plan's) reaches that tenant's chunks and nothing else; the tag says nothing about the salt itself.
 */
export function chunkPrefix(salt: string): string {
  return `kv/s${digest(['prefix', salt]).slice(0, 16)}/`;
}

function chunkKey(scope: KeyScope, kind: 'ind' | 'chain', hash: string): string {
  return `${chunkPrefix(scope.salt)}${scope.modelFingerprint.slice(0, 16)}/${codecLabel(scope.codec)}/${kind}/${hash}.kv`;
}

/** Key of a chunk's KV computed alone after BOS: reusable in any order and combination. */
export function independentKey(scope: KeyScope, tokenIds: ArrayLike<number>): string {
  const hash = digest(['ind', scope.modelFingerprint, codecLabel(scope.codec), scope.salt, tokenHash(tokenIds)]);
  return chunkKey(scope, 'ind', hash);
}

/**
 * Key of a chunk's KV computed after BOS and all earlier chunks of its chain, whose last key is `previousKey`.
 * A chain's first chunk is computed exactly like an independent chunk, so it is the same object.
 */
export function chainedKey(scope: KeyScope, previousKey: string | null, tokenIds: ArrayLike<number>): string {
  if (previousKey === null) return independentKey(scope, tokenIds);
  const hash = digest(['chain', scope.modelFingerprint, codecLabel(scope.codec), scope.salt, previousKey ?? '', tokenHash(tokenIds)]);
  return chunkKey(scope, 'chain', hash);
}

/** Document ids are content hashes, so uploading the same document twice is one document. */
export function documentId(namespace: string, title: string, text: string): string {
  return digest(['doc', namespace, title, text]).slice(0, 32);
}

export const MANIFEST_PREFIX = 'manifests/';

export function manifestKey(namespace: string, docId: string): string {
  return `${MANIFEST_PREFIX}${namespace}/${docId}.json`;
}
