import { type Agent, request, type IncomingHttpHeaders, type IncomingMessage } from 'node:http';
import { isTransientSocketError } from '../../common/backoff.ts';
import type { z } from 'zod';
import { KdnError, type ErrorCode } from '../../common/errors.ts';
import { codeForHttpStatus } from '../../common/http-errors.ts';
import { EDGE_HEADERS, ErrorBody, type EdgeMethod } from '../protocol.ts';

export interface EdgeRequest {
  method: EdgeMethod;
  path: string;
  headers?: Record<string, string>;
  body?: Uint8Array | string;
  /** Bound on connecting, on waiting for the response head, and on any silence while the body arrives. */
  timeoutMs: number;
  signal?: AbortSignal;
}

/** An edge that did not answer usefully: refused, reset, timed out, or failed with a 5xx. The client tries the next edge. */
export class EdgeFailure extends Error {
  readonly edge: string;
  readonly code: ErrorCode;
  /** The edge process itself is unreachable (as opposed to answering 5xx); it is skipped for a while. */
  readonly unreachable: boolean;
  /** The connection was refused or reset before an answer: an idempotent request may be sent again after a pause. */
  readonly transient: boolean;

  constructor(edge: string, code: ErrorCode, message: string, unreachable: boolean, transient = false) {
    super(`${edge}: ${message}`);
    this.edge = edge;
    this.code = code;
    this.unreachable = unreachable;
    this.transient = transient;
  }
}

/** A kept-alive connection the edge had closed by the time the request went out on it. */
class StaleConnection extends Error {}

/**
 * Sends one request to one edge. Resolves with the response head; transport failures reject with EdgeFailure. A
 * reused keep-alive connection that turns out reset is not a failure of the edge: the request goes once more, on a
 * connection of its own (the body is in memory, so sending it again is safe for every method here).
 */
export function sendRequest(agent: Agent, edge: string, req: EdgeRequest): Promise<IncomingMessage> {
  return sendOnce(agent, edge, req).catch((err: unknown) => {
    if (err instanceof StaleConnection) return sendOnce(false, edge, req);
    throw err;
  });
}

function sendOnce(agent: Agent | false, edge: string, req: EdgeRequest): Promise<IncomingMessage> {
  return new Promise((resolve, reject) => {
    if (req.signal?.aborted) {
      reject(aborted());
      return;
    }
    const headers: Record<string, string> = { ...req.headers };
    if (req.body !== undefined) headers[EDGE_HEADERS.contentLength] = String(Buffer.byteLength(req.body));
    const outgoing = request(new URL(req.path, edge), { method: req.method, agent, headers, signal: req.signal });
    outgoing.setTimeout(req.timeoutMs, () => {
      outgoing.destroy(new EdgeFailure(edge, 'TIMEOUT', `no answer within ${req.timeoutMs} ms`, true));
    });
    outgoing.once('response', resolve);
    outgoing.once('error', (err: Error) => {
      if (req.signal?.aborted) reject(aborted());
      else if (err instanceof EdgeFailure) reject(err);
      else if (outgoing.reusedSocket && isTransientSocketError(err)) reject(new StaleConnection(err.message));
      else reject(new EdgeFailure(edge, 'EDGE_UNAVAILABLE', err.message, true, isTransientSocketError(err)));
    });
    outgoing.end(req.body);
  });
}

/** Reads a whole (small or known-size) response body; a body cut short rejects with EdgeFailure. */
export async function readAll(edge: string, res: IncomingMessage): Promise<Buffer> {
  const declared = res.headers[EDGE_HEADERS.contentLength];
  const chunks: Buffer[] = [];
  let received = 0;
  try {
    for await (const chunk of res as AsyncIterable<Buffer>) {
      chunks.push(chunk);
      received += chunk.length;
    }
  } catch (err) {
    throw err instanceof EdgeFailure
      ? err
      : new EdgeFailure(edge, 'EDGE_UNAVAILABLE', `response cut short: ${(err as Error).message}`, true);
  }
  if (declared !== undefined && Number(declared) !== received && res.statusCode !== 304) {
    throw new EdgeFailure(edge, 'EDGE_UNAVAILABLE', `response cut short at ${received} of ${declared} bytes`, true);
  }
  return Buffer.concat(chunks, received);
}

/**
 * Reads a JSON body and checks it against its edge/protocol.ts schema. An edge that answers something else (another
 * version, a proxy's page, a bug) is an EdgeFailure like a 5xx: the client tries the next edge, and the caller
 * finally gets EDGE_UNAVAILABLE naming what was wrong, never an unchecked value.
 */
export async function readJson<S extends z.ZodType>(edge: string, res: IncomingMessage, schema: S, what: string): Promise<z.infer<S>> {
  return parseJson(edge, (await readAll(edge, res)).toString('utf8'), schema, what);
}

export function parseJson<S extends z.ZodType>(edge: string, text: string, schema: S, what: string): z.infer<S> {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw new EdgeFailure(edge, 'EDGE_UNAVAILABLE', `${what}: the answer is not JSON`, false);
  }
  const parsed = schema.safeParse(json);
  if (!parsed.success) {
    const issues = parsed.error.issues.map((issue) => `${issue.path.join('.') || '(body)'}: ${issue.message}`).join('; ');
    throw new EdgeFailure(edge, 'EDGE_UNAVAILABLE', `${what}: the answer does not match the edge protocol (${issues})`, false);
  }
  return parsed.data;
}

/**
 * Turns an error response into what the client raises: 5xx become EdgeFailure (try another edge), anything else is
 * the edge's own KdnError rebuilt from its JSON body, so codes like NOT_FOUND or KV_CORRUPT pass through unchanged.
 */
export async function errorFromResponse(edge: string, res: IncomingMessage): Promise<KdnError | EdgeFailure> {
  const text = (await readAll(edge, res).catch(() => Buffer.alloc(0))).toString('utf8');
  const status = res.statusCode ?? 500;
  let code: ErrorCode = codeForHttpStatus(status);
  let message = `HTTP ${status}`;
  let hint: string | undefined;
  let details: Record<string, unknown> | undefined;
  const body = ErrorBody.safeParse(safeJson(text));
  // Not our JSON (a proxy, or a HEAD): the status mapping above stands.
  if (body.success) ({ code, message, hint, details } = body.data.error);
  if (status >= 500) return new EdgeFailure(edge, code, message, false);
  return new KdnError(code, message, { ...(hint ? { hint } : {}), details: { ...details, edge } });
}

function safeJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

export function header(headers: IncomingHttpHeaders, name: string): string {
  const value = headers[name];
  return Array.isArray(value) ? value.join(', ') : (value ?? '');
}

function aborted(): KdnError {
  return new KdnError('TIMEOUT', 'edge request aborted by the caller', { hint: 'the signal passed to the edge client fired' });
}
