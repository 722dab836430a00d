import { readFileSync, statSync } from 'node:fs';
import { KdnError } from './errors.ts';

/**
 * Reads a secret from a file (the contents, trimmed), so secrets need not be flags that any local user can read
 * in the process list. Files others may read are refused: a secret there is not one.
 */
export function readSecretFile(path: string, what: string): string {
  let text: string;
  try {
    if ((statSync(path).mode & 0o077) !== 0) {
      throw new KdnError('INVALID_ARGUMENT', `${what} file ${path} can be read by other users`, { hint: `chmod 600 ${path}` });
    }
    text = readFileSync(path, 'utf8').trim();
  } catch (err) {
    if (err instanceof KdnError) throw err;
    throw new KdnError('INVALID_ARGUMENT', `cannot read the ${what} file ${path}: ${(err as Error).message}`, {
      hint: 'give a readable file holding only the secret',
      cause: err,
    });
  }
  if (text === '') throw new KdnError('INVALID_ARGUMENT', `the ${what} file ${path} is empty`, { hint: 'write the secret into it' });
  return text;
}

/** `secret`, else the contents of `file` when given; both is a mistake worth refusing. */
export function secretFromFlagOrFile(secret: string | undefined, file: string | undefined, what: string): string | undefined {
  if (file === undefined) return secret;
  if (secret !== undefined) {
    throw new KdnError('INVALID_ARGUMENT', `the ${what} is given both directly and as a file`, {
      hint: 'give one of them (the file keeps it out of the process list)',
    });
  }
  return readSecretFile(file, what);
}
