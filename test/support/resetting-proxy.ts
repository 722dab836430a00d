import { connect, createServer, type Socket } from 'node:net';
import type { AddressInfo } from 'node:net';

export interface ResettingProxy {
  url: string;
  /** Connections reset so far. */
  resets(): number;
  close(): Promise<void>;
}

/**
 * A TCP proxy in front of a real server that resets connections the way a peer under load does:
 * - `fresh`: the first `fresh` connections are reset as soon as the request's first bytes arrive;
 * - `reused`: a connection that already carried an answer is reset when the next request arrives on it, as a
 *   server does that closed a kept-alive connection while the client was sending on it.
 */
export async function startResettingProxy(target: string, options: { fresh?: number; reused?: boolean }): Promise<ResettingProxy> {
  const { hostname, port } = new URL(target);
  let resets = 0;
  let freshLeft = options.fresh ?? 0;
  const sockets = new Set<Socket>();
  const server = createServer((client) => {
    sockets.add(client);
    client.once('close', () => sockets.delete(client));
    const resetFirst = freshLeft > 0;
    if (resetFirst) freshLeft--;
    let answered = false;
    let upstream: Socket | undefined;
    client.on('data', (data: Buffer) => {
      if (resetFirst || (options.reused && answered)) {
        resets++;
        upstream?.destroy();
        client.resetAndDestroy();
        return;
      }
      if (!upstream) {
        upstream = connect(Number(port), hostname);
        sockets.add(upstream);
        const up = upstream;
        up.once('close', () => sockets.delete(up));
        up.on('data', (chunk: Buffer) => {
          answered = true;
          client.write(chunk);
        });
        up.on('error', () => client.destroy());
        up.on('end', () => client.end());
      }
      upstream.write(data);
    });
    client.on('error', () => upstream?.destroy());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port: own } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${own}`,
    resets: () => resets,
    close: async () => {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
