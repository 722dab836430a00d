/**
 * C0 and C1 control characters and DEL: printed on a terminal they are commands (escape sequences, a cleared screen,
 * a new window title). The API refuses them in names it stores or echoes; the CLI escapes any it is sent.
 */
const CONTROL_CHARACTERS = /[\u0000-\u001f\u007f-\u009f]/g;

export function hasControlCharacters(text: string): boolean {
  return text.search(CONTROL_CHARACTERS) !== -1;
}

/** `text` with each control character shown as \xNN. */
export function escapeControlCharacters(text: string): string {
  return text.replace(CONTROL_CHARACTERS, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
}
