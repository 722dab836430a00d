import { KdnError, isKdnError } from '../../common/errors.ts';

/**
 * The kdn command's exit statuses, for scripts:
 *   0  success
 *   1  the request failed (the server answered with an error, or a local operation failed)
 *   2  usage: unknown command or option, a bad or missing argument (nothing was sent)
 *   3  the server could not be reached (refused, reset, no such host)
 *   4  the server refused the API key (UNAUTHENTICATED, FORBIDDEN)
 */
export const EXIT = { ok: 0, failed: 1, usage: 2, unreachable: 3, auth: 4 } as const;

/** A mistake in how the command was called, found before anything was sent. */
export class UsageError extends KdnError {
  /** `code` NOT_FOUND for a file argument that is not there. */
  constructor(message: string, hint?: string, code: 'INVALID_ARGUMENT' | 'NOT_FOUND' = 'INVALID_ARGUMENT') {
    super(code, message, hint === undefined ? {} : { hint });
    this.name = 'UsageError';
  }
}

export function exitCodeFor(err: unknown): number {
  if (err instanceof UsageError) return EXIT.usage;
  if (isKdnError(err, 'UNAVAILABLE')) return EXIT.unreachable;
  if (isKdnError(err, 'UNAUTHENTICATED') || isKdnError(err, 'FORBIDDEN')) return EXIT.auth;
  return EXIT.failed;
}

/** The server names request fields; a CLI user knows them as these flags. */
const FLAG_FOR_FIELD: [RegExp, string][] = [
  [/\btopK\b/g, '--top-k'],
  [/\bmaxTokens\b/g, '--max-tokens'],
  [/\btemperature\b/g, '--temperature'],
  [/\bttftTargetMs\b/g, '--ttft-target'],
  [/\bdocuments(?=:|\.\d)/g, '--doc'],
  [/\bnamespace:/g, '--namespace:'],
];

/** A server message or hint in the CLI's terms. */
export function inCliTerms(text: string): string {
  return FLAG_FOR_FIELD.reduce((out, [field, flag]) => out.replace(field, flag), text);
}
