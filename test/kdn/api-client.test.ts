import { expect } from 'chai';
import { createServer, type Server, type Socket } from 'node:net';
import { KdnApiClient } from '../../kdn/client/api-client.ts';
import { KdnError } from '../../common/errors.ts';

/**
 * A server that resets the connection of the first request it reads (as a kdn whose keep-alive timer fired while a
 * request arrived does), then answers every later one with `{"status":"ok"}`.
 */
async function resettingServer(): Promise<{ url: string; requests: string[]; close(): Promise<void> }> {
  const requests: string[] = [];
  const sockets = new Set<Socket>();
  const server: Server = createServer((socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
    socket.on('data', (chunk: Buffer) => {
      requests.push(chunk.toString('latin1').split('\r\n')[0]!);
      if (requests.length === 1) {
        socket.resetAndDestroy();
        return;
      }
      const body = '{"status":"ok"}';
      socket.write(`HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: ${body.length}\r\n\r\n${body}`);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    close: async () => {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

describe('kdn API client on a reset connection', () => {
  it('sends a GET once more when its connection is reset, and answers', async () => {
    const server = await resettingServer();
    try {
      const status = await new KdnApiClient(server.url, 'key').status();
      expect(status).to.deep.equal({ status: 'ok' });
      expect(server.requests).to.deep.equal(['GET /v1/status HTTP/1.1', 'GET /v1/status HTTP/1.1']);
    } finally {
      await server.close();
    }
  });

  it('does not send a document delete twice: the reset is a clear error', async () => {
    const server = await resettingServer();
    try {
      const error = await new KdnApiClient(server.url, 'key').deleteDocument('d').then(
        () => undefined,
        (err: unknown) => err,
      );
      expect(error).to.be.instanceOf(KdnError);
      expect((error as KdnError).message).to.match(/cannot reach kdn at .*: (ECONNRESET|UND_ERR_SOCKET)/);
      expect(server.requests).to.deep.equal(['DELETE /v1/documents/d HTTP/1.1']);
    } finally {
      await server.close();
    }
  });
});
