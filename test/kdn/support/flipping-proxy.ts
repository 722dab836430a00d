import { startTcpProxy, type TcpProxy } from '../../../fixtures/tcp-proxy.ts';

/**
 * A TCP proxy to `target` that flips the response body byte at `bodyOffset` of the first response on each connection;
 * with `holdMs`, the body from that byte on is held back that long (the bytes before it arrive first).
 */
export function startFlippingProxy(target: string, bodyOffset: number, holdMs = 0): Promise<TcpProxy> {
  return startTcpProxy(target, ({ client, upstream }) => {
    let head = Buffer.alloc(0);
    let body = -1;
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
        client.write(out);
        return;
      }
      out[at]! ^= 0xff;
      client.write(out.subarray(0, at));
      upstream.pause();
      setTimeout(() => {
        client.write(out.subarray(at));
        upstream.resume();
      }, holdMs);
    });
  });
}
