import type { Server } from 'node:http';

/** Starts `server` listening on `host`:`port`; rejects with the listen error (EADDRINUSE, EACCES) instead of emitting it. */
export function listen(server: Server, port: number, host: string): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
}
