/**
 * The identity of a file a block source names (types.ts KVBlockSource): what a reader compares, after opening the
 * path itself, to make sure it reads the very file whose bytes were verified. A file replaced under the same name
 * has another inode or modification time.
 */
export function fileIdentity(stats: { dev: number; ino: number; size: number; mtimeMs: number }): string {
  return `${stats.dev}:${stats.ino}:${stats.size}:${stats.mtimeMs}`;
}
