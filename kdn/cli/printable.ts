/**
 * Strings the server sends (titles, names, messages) may hold control characters, stored before the API refused
 * them or echoed from a request; printed raw they would drive the reader's terminal. Each is shown escaped instead.
 */
export function printable(text: string): string {
  return text.replace(/[\u0000-\u001f\u007f-\u009f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
}

/** Lines for a person to read, each escaped, one per line. */
export function printLines(lines: string[]): void {
  process.stdout.write(`${lines.map(printable).join('\n')}\n`);
}
