import { readFileSync } from 'node:fs';
import { chmod, mkdir, rename, writeFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { randomBytes } from 'node:crypto';

/**
 * The key `kdn serve` generates when no keys are configured is written to <dataDir>/api-key (readable by its owner
 * only), so the CLI on the same machine can use it without being told.
 */
export const LOCAL_KEY_FILE = 'api-key';

export function localKeyPath(dataDir: string): string {
  return join(resolve(dataDir), LOCAL_KEY_FILE);
}

/** The key in `path`, or undefined when there is no readable one (sync: the CLI reads it while parsing flags). */
export function readLocalKey(path: string): string | undefined {
  try {
    const key = readFileSync(path, 'utf8').trim();
    return /^[\x21-\x7e]{1,256}$/.test(key) ? key : undefined;
  } catch {
    return undefined;
  }
}

/** Writes the key atomically (temp file, then rename) with mode 0600. */
export async function writeLocalKey(path: string, key: string): Promise<void> {
  await mkdir(dirname(path), { recursive: true });
  const temp = `${path}.${randomBytes(6).toString('hex')}.tmp`;
  await writeFile(temp, `${key}\n`, { mode: 0o600 });
  await chmod(temp, 0o600);
  await rename(temp, path);
}
