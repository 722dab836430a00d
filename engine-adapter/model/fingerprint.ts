import { createHash, type Hash } from 'node:crypto';
import type { ModelConfig } from './config.ts';
import { loadModelConfig } from './load-config.ts';
import { SafetensorsModel, type TensorEntry } from './safetensors.ts';

/**
 * The model fingerprint keys every KV object: sha256 over the normalized config and every tensor's name, dtype,
 * shape and raw bytes, in sorted name order. Token ids (bos/eos) are left out because they do not change any KV.
 * Callers feed tensors in `SafetensorsModel.names()` order; load-weights.ts does so while it loads, so the weights
 * are read once.
 */
export class FingerprintHasher {
  private readonly hash: Hash = createHash('sha256');

  constructor(config: ModelConfig) {
    const { bosTokenId: _bos, eosTokenIds: _eos, ...architecture } = config;
    this.hash.update(`kdn-model-fingerprint-v1\n${canonicalJson(architecture)}\n`);
  }

  beginTensor(entry: TensorEntry): void {
    this.hash.update(`${entry.name}\0${entry.dtype}\0${entry.shape.join(',')}\0${entry.end - entry.start}\n`);
  }

  update(raw: Uint8Array): void {
    this.hash.update(raw);
  }

  digest(): string {
    return this.hash.digest('hex');
  }
}

/** JSON with object keys sorted, so the same config always hashes the same. */
function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  if (value !== null && typeof value === 'object') {
    const entries = Object.entries(value as Record<string, unknown>)
      .filter(([, v]) => v !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(',')}}`;
  }
  return JSON.stringify(value);
}

/** Fingerprints a model directory without converting its weights (streams every tensor's bytes once). */
export async function fingerprintModel(modelDir: string, config?: ModelConfig): Promise<string> {
  const cfg = config ?? (await loadModelConfig(modelDir));
  const files = await SafetensorsModel.open(modelDir);
  try {
    const hasher = new FingerprintHasher(cfg);
    for (const name of files.names()) {
      const entry = files.entry(name)!;
      hasher.beginTensor(entry);
      for await (const raw of files.rawChunks(entry)) hasher.update(raw);
    }
    return hasher.digest();
  } finally {
    await files.close();
  }
}
