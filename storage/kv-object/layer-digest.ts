import { createHash } from 'node:crypto';
import { blake3 } from '@napi-rs/blake-hash';
import { KdnError } from '../../common/errors.ts';

/**
 * The hash behind each format version's layer checksums (format.ts). Version 1 used sha256; version 2 uses BLAKE3
 * (256-bit), which hashes several times faster per core on the same CPU, so verifying a chunk before injection
 * keeps up with reading it from shared memory. Both are cryptographic: the header still pins every payload byte.
 */
export const LAYER_DIGESTS = { 1: 'sha256', 2: 'blake3' } as const;

export type LayerDigestVersion = keyof typeof LAYER_DIGESTS;

/** The format versions this build reads; the newest is what it writes unless asked otherwise. */
export const READABLE_VERSIONS = Object.keys(LAYER_DIGESTS).map(Number) as LayerDigestVersion[];

/** `version` if this build reads it; KV_UNSUPPORTED otherwise. `where` names where the object states it. */
export function readableVersion(version: unknown, where: string): LayerDigestVersion {
  if (typeof version === 'number' && Object.hasOwn(LAYER_DIGESTS, version)) return version as LayerDigestVersion;
  throw new KdnError('KV_UNSUPPORTED', `KV ${where} version ${JSON.stringify(version)}; this build reads ${READABLE_VERSIONS.join(', ')}`, {
    hint: 'upgrade KDN or re-encode the object',
  });
}

/** Lowercase hex digest of a stored layer block under format `version`. */
export function layerDigest(version: LayerDigestVersion, bytes: Uint8Array): string {
  switch (LAYER_DIGESTS[version]) {
    case 'sha256':
      return createHash('sha256').update(bytes).digest('hex');
    case 'blake3':
      return blake3(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)).toString('hex');
    default:
      throw new KdnError('KV_UNSUPPORTED', `KV format version ${version} has no layer digest in this build`);
  }
}
