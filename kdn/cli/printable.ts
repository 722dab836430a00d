import { escapeControlCharacters } from '../../common/control-characters.ts';

/**
 * Strings the server sends (titles, names, messages) may hold control characters, stored before the API refused
 * them or echoed from a request; printed raw they would drive the reader's terminal. Each is shown escaped instead.
 */
export const printable = escapeControlCharacters;

/** Lines for a person to read, each escaped, one per line. */
export function printLines(lines: string[]): void {
  process.stdout.write(`${lines.map(printable).join('\n')}\n`);
}
