import type { Server, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';

/** How long a client that was refused gets to finish sending its body before its connection is closed. */
export const DRAIN_AFTER_REFUSAL_MS = 2_000;

/**
 * Caps the connections one remote address holds open at once: past `cap`, new sockets from that address are
 * closed at once, so a few hosts holding slow requests cannot take every socket the server can hold.
 */
export function capConnectionsPerAddress(server: Server, cap: number): void {
  const open = new Map<string, number>();
  server.on('connection', (socket: Socket) => {
    const address = socket.remoteAddress ?? '';
    const count = (open.get(address) ?? 0) + 1;
    if (count > cap) {
      socket.destroy();
      return;
    }
    open.set(address, count);
    socket.once('close', () => {
      const left = (open.get(address) ?? 1) - 1;
      if (left <= 0) open.delete(address);
      else open.set(address, left);
    });
  });
}

/**
 * For a response sent before its request's body was read (a refusal: 401, 413, 415, ...): the connection is not
 * kept alive, so node closes it once the answer is out instead of reading a trickling body until the request
 * timeout to reuse it; should the answer itself not get out (a client that neither sends nor reads), the socket is
 * closed after `drainMs` all the same.
 */
export function closeUnreadRequest(res: ServerResponse, drainMs = DRAIN_AFTER_REFUSAL_MS): void {
  const req = res.req as ServerResponse['req'] | undefined;
  // A request whose socket is already gone has nothing left to drain.
  if (!req || req.complete || !req.socket) return;
  res.shouldKeepAlive = false;
  if (!res.headersSent) res.setHeader('connection', 'close');
  const socket = req.socket;
  const timer = setTimeout(() => socket.destroy(), drainMs);
  timer.unref();
  req.once('end', () => clearTimeout(timer));
  socket.once('close', () => clearTimeout(timer));
}
