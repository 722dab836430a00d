import { parentPort } from 'node:worker_threads';
import { layerDigest, type LayerDigestVersion } from './layer-digest.ts';

/** A hash-pool.ts thread: digests each block it is sent and hands the block back with the digest (no copy). */
parentPort!.on('message', ({ id, version, bytes }: { id: number; version: LayerDigestVersion; bytes: Uint8Array }) => {
  parentPort!.postMessage({ id, digest: layerDigest(version, bytes), bytes }, [bytes.buffer as ArrayBuffer]);
});
