import { readFile } from 'node:fs/promises';
import { KdnError } from '../../common/errors.ts';
import type { HfConfig } from './shapes.ts';

/** Reads a config.json as a plain object, for handing to transformers unchanged. */
export async function readJsonConfig(path: string): Promise<HfConfig> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(await readFile(path, 'utf8'));
  } catch (err) {
    throw new KdnError('MODEL_INVALID', `cannot read ${path}: ${(err as Error).message}`, { cause: err });
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) {
    throw new KdnError('MODEL_INVALID', `${path} is not a JSON object`);
  }
  return parsed as HfConfig;
}
