/**
 * A TCP proxy in front of one server whose downstream direction (server to client) is held to a byte rate by a
 * token bucket shared by all its connections, like one link between a kdn host and an edge. The rate can change
 * while connections are open; upstream (requests) passes unthrottled.
 */
import { connect, createServer, type Server, type Socket } from 'node:net';

/** Refill step: small enough that a 20 MB/s link still sends in 400 kB slices, not bursts of a second. */
const TICK_MS = 20;

export class ThrottleProxy {
  private readonly server: Server;
  private readonly sockets = new Set<Socket>();
  /** Bytes per second the link carries; Infinity for no limit. */
  private rate = Infinity;
  private tokens = 0;
  private readonly waiting: (() => void)[] = [];
  private readonly timer: NodeJS.Timeout;

  private constructor(
    private readonly target: { host: string; port: number },
    readonly port: number,
    server: Server,
  ) {
    this.server = server;
    this.timer = setInterval(() => this.refill(), TICK_MS);
    this.timer.unref();
  }

  /** Listens on a free port of 127.0.0.1, forwarding to `target` (an http URL). */
  static async start(target: string): Promise<ThrottleProxy> {
    const url = new URL(target);
    const server = createServer();
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const address = server.address();
    if (address === null || typeof address === 'string') throw new Error('proxy has no port');
    const proxy = new ThrottleProxy({ host: url.hostname, port: Number(url.port) }, address.port, server);
    server.on('connection', (client) => proxy.pipe(client));
    return proxy;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  /** Bytes per second from now on (Infinity: unlimited). */
  setRate(bytesPerSecond: number): void {
    this.rate = bytesPerSecond;
    this.tokens = 0;
    this.release();
  }

  async close(): Promise<void> {
    clearInterval(this.timer);
    for (const socket of this.sockets) socket.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private pipe(client: Socket): void {
    const upstream = connect(this.target);
    for (const socket of [client, upstream]) {
      this.sockets.add(socket);
      socket.on('close', () => this.sockets.delete(socket));
      socket.on('error', () => {
        client.destroy();
        upstream.destroy();
      });
    }
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => client.destroy());
    client.pipe(upstream);
    upstream.on('data', (data: Buffer) => {
      if (this.rate === Infinity) {
        if (!client.write(data)) upstream.pause();
        return;
      }
      upstream.pause();
      void this.send(client, data).then(() => upstream.resume());
    });
    client.on('drain', () => upstream.resume());
  }

  /** Writes `data` as the bucket allows, slice by slice. */
  private async send(client: Socket, data: Buffer): Promise<void> {
    let at = 0;
    while (at < data.length && !client.destroyed) {
      if (this.rate !== Infinity && this.tokens <= 0) {
        await new Promise<void>((resolve) => this.waiting.push(resolve));
        continue;
      }
      const take = this.rate === Infinity ? data.length - at : Math.min(data.length - at, Math.ceil(this.tokens));
      this.tokens -= take;
      client.write(data.subarray(at, at + take));
      at += take;
    }
  }

  private refill(): void {
    if (this.rate === Infinity) return;
    // At most one tick's worth banked, so an idle link does not burst past its rate.
    this.tokens = Math.min(this.tokens + (this.rate * TICK_MS) / 1000, (this.rate * TICK_MS) / 1000);
    this.release();
  }

  private release(): void {
    for (const wake of this.waiting.splice(0)) wake();
  }
}
