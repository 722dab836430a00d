import { connect, createServer, type AddressInfo, type Socket } from 'node:net';

/**
 * A TCP proxy to `target` that flips the response body byte at `bodyOffset` of the first response on each connection;
 * with `holdMs`, the body from that byte on is held back that long (the bytes before it arrive first).
 */
export async function startFlippingProxy(target: string, bodyOffset: number, holdMs = 0): Promise<{ url: string; close(): Promise<void> }> {
  const { hostname, port } = new URL(target);
  const sockets = new Set<Socket>();
  const server = createServer((downstream) => {
    const upstream = connect(Number(port), hostname);
    sockets.add(downstream).add(upstream);
    let head = Buffer.alloc(0);
    let body = -1;
    downstream.on('data', (chunk: Buffer) => upstream.write(chunk));
    upstream.on('data', (chunk: Buffer) => {
      let out = chunk;
      if (body < 0) {
        head = Buffer.concat([head, chunk]);
        const end = head.indexOf('\r\n\r\n');
        if (end < 0) return;
        out = head;
        body = -(end + 4);
      }
      const at = bodyOffset - body;
      body += out.length;
      if (at < 0 || at >= out.length) {
        downstream.write(out);
        return;
      }
      out[at]! ^= 0xff;
      downstream.write(out.subarray(0, at));
      upstream.pause();
      setTimeout(() => {
        downstream.write(out.subarray(at));
        upstream.resume();
      }, holdMs);
    });
    for (const s of [downstream, upstream])
      s.on('error', () => undefined).on('close', () => {
        downstream.destroy();
        upstream.destroy();
      });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}
