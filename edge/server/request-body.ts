import type { Hash } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import { KdnError } from '../../common/errors.ts';
import { EDGE_HEADERS } from '../protocol.ts';

/**
 * Reads a request body of at most `limit` bytes into one Buffer, feeding `hash` on the way when given. With a
 * Content-Length the buffer is allocated once and filled in place; a body over the limit is refused
 * (PAYLOAD_TOO_LARGE) before or while it arrives, and the client gets a short while to finish sending before its
 * connection is closed (common/slow-clients.ts). A client that goes away midway is INVALID_ARGUMENT with
 * details.aborted, which the server logs at debug level only: it is the client's doing, not the edge's.
 */
export async function readBody(req: IncomingMessage, limit: number, hash?: Hash): Promise<Buffer> {
  refuseEncodedBody(req);
  const declared = req.headers[EDGE_HEADERS.contentLength];
  try {
    if (declared !== undefined) {
      const length = Number(declared);
      if (length > limit) throw tooLarge(limit);
      return await readDeclared(req, length, hash);
    }
    const chunks: Buffer[] = [];
    let received = 0;
    for await (const chunk of req as AsyncIterable<Buffer>) {
      received += chunk.length;
      if (received > limit) throw tooLarge(limit);
      hash?.update(chunk);
      chunks.push(chunk);
    }
    return Buffer.concat(chunks, received);
  } catch (err) {
    if (err instanceof KdnError) throw err;
    throw new KdnError('INVALID_ARGUMENT', `the request body did not arrive: ${(err as Error).message}`, {
      hint: 'send the whole body',
      details: { aborted: true },
      cause: err,
    });
  }
}

/** Bodies are taken as sent: a compressed one is refused (415) rather than stored compressed or misread. */
export function refuseEncodedBody(req: IncomingMessage): void {
  const encoding = req.headers[EDGE_HEADERS.contentEncoding];
  if (encoding === undefined || encoding.trim().toLowerCase() === 'identity') return;
  throw new KdnError('UNSUPPORTED_MEDIA_TYPE', `Content-Encoding "${encoding}" is not accepted by the edge`, {
    hint: 'send the body uncompressed (KV objects carry their own lz4 framing)',
  });
}

async function readDeclared(req: IncomingMessage, length: number, hash?: Hash): Promise<Buffer> {
  // Not from node's shared pool: a small body kept in the memory tier would otherwise pin a whole pool slab.
  const body = Buffer.allocUnsafeSlow(length);
  let offset = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    chunk.copy(body, offset);
    hash?.update(chunk);
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
