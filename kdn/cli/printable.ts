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

/** A command's result: one line of JSON with `--json`, else lines for a person (built only then). */
export function printJsonOr(json: boolean | undefined, value: unknown, lines: () => string[]): void {
  if (json) process.stdout.write(`${JSON.stringify(value)}\n`);
  else printLines(lines());
}
