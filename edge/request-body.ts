import type { IncomingMessage } from 'node:http';
import { KdnError } from '../common/errors.ts';

/**
 * Reads a request body of at most `limit` bytes into one Buffer. With a Content-Length the buffer is allocated once
 * and filled in place; a body over the limit is refused (PAYLOAD_TOO_LARGE) before or while it arrives, and the rest
 * is drained by node (bounded by the server's requestTimeout) so the client still reads the 413.
 */
export async function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  const declared = req.headers['content-length'];
  if (declared !== undefined) {
    const length = Number(declared);
    if (length > limit) throw tooLarge(limit);
    return readDeclared(req, length);
  }
  const chunks: Buffer[] = [];
  let received = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    received += chunk.length;
    if (received > limit) {
      req.resume();
      throw tooLarge(limit);
    }
    chunks.push(chunk);
  }
  return Buffer.concat(chunks, received);
}

async function readDeclared(req: IncomingMessage, length: number): Promise<Buffer> {
  // Not from node's shared pool: a small body kept in the memory tier would otherwise pin a whole pool slab.
  const body = Buffer.allocUnsafeSlow(length);
  let offset = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    chunk.copy(body, offset);
    offset += chunk.length;
  }
  if (offset !== length) {
    throw new KdnError('INVALID_ARGUMENT', `request body ended after ${offset} of ${length} bytes`, { hint: 'send the whole body' });
  }
  return body;
}

function tooLarge(limit: number): KdnError {
  return new KdnError('PAYLOAD_TOO_LARGE', `request body is larger than ${limit} bytes`, {
    hint: 'the edge limit is set with --max-body (KDN_EDGE_MAX_BODY)',
  });
}
