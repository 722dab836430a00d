import { read } from 'node:fs';

/**
 * Reads all of `into` from `position` on through libuv's pool, then calls `done`: false when a read failed or the file
 * ended first. A callback rather than a promise, for callers that read many blocks (each promise is garbage).
 */
export function readFully(fd: number, into: Uint8Array, position: number, done: (ok: boolean) => void): void {
  let at = 0;
  const next = (): void => {
    try {
      read(fd, into, at, into.length - at, position + at, (err, bytes) => {
        if (err || bytes === 0) return done(false);
        at += bytes;
        if (at < into.length) next();
        else done(true);
      });
    } catch {
      // Arguments fs refuses outright (a position past its range): as a failed read, not a throw out of a callback.
      done(false);
    }
  };
  next();
}
