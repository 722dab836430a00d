/**
 * A TCP proxy in front of one server whose downstream direction (server to client) is held to a byte rate by a
 * token bucket shared by all its connections, like one link between a kdn host and an edge. The rate can change
 * while connections are open; upstream (requests) passes unthrottled.
 */
import type { Socket } from 'node:net';
import { type ProxiedConnection, startTcpProxy, type TcpProxy } from '../../fixtures/tcp-proxy.ts';

/** Refill step: small enough that a 20 MB/s link still sends in 400 kB slices, not bursts of a second. */
const TICK_MS = 20;

export class ThrottleProxy {
  /** Bytes per second the link carries; Infinity for no limit. */
  private rate = Infinity;
  private tokens = 0;
  private readonly waiting: (() => void)[] = [];
  private readonly timer: NodeJS.Timeout;

  private constructor(private readonly proxy: TcpProxy) {
    this.timer = setInterval(() => this.refill(), TICK_MS);
    this.timer.unref();
  }

  /** Listens on a free port of 127.0.0.1, forwarding to `target` (an http URL). */
  static async start(target: string): Promise<ThrottleProxy> {
    // `throttle` is set before any client connects: none knows the proxy's URL until this returns.
    const throttle: ThrottleProxy = new ThrottleProxy(await startTcpProxy(target, (connection) => throttle.answer(connection)));
    return throttle;
  }

  get url(): string {
    return this.proxy.url;
  }

  /** Bytes per second from now on (Infinity: unlimited). */
  setRate(bytesPerSecond: number): void {
    this.rate = bytesPerSecond;
    this.tokens = 0;
    this.release();
  }

  async close(): Promise<void> {
    clearInterval(this.timer);
    await this.proxy.close();
  }

  private answer({ client, upstream }: ProxiedConnection): void {
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
