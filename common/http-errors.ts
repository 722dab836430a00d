import type { ServerResponse } from 'node:http';
import { type KdnError, toKdnError, type ErrorCode } from './errors.ts';
import { closeUnreadRequest } from './slow-clients.ts';

/** The one place error codes become HTTP statuses, for kdn and the edges alike. */
const STATUS: Record<ErrorCode, number> = {
  INVALID_ARGUMENT: 400,
  INVALID_KEY: 400,
  PAYLOAD_TOO_LARGE: 413,
  UNSUPPORTED_MEDIA_TYPE: 415,
  NOT_FOUND: 404,
  METHOD_NOT_ALLOWED: 405,
  CONFLICT: 409,
  PRECONDITION_FAILED: 412,
  RANGE_NOT_SATISFIABLE: 416,
  UNAUTHENTICATED: 401,
  FORBIDDEN: 403,
  RATE_LIMITED: 429,
  KV_CORRUPT: 422,
  KV_MISMATCH: 422,
  KV_UNSUPPORTED: 422,
  MODEL_INVALID: 500,
  MODEL_UNSUPPORTED: 500,
  ENGINE_UNAVAILABLE: 503,
  CONTEXT_TOO_LONG: 400,
  ORIGIN_UNAVAILABLE: 502,
  ORIGIN_TIMEOUT: 504,
  EDGE_UNAVAILABLE: 502,
  STORAGE_ERROR: 500,
  UNAVAILABLE: 503,
  TIMEOUT: 504,
  CANCELLED: 409,
  INTERNAL: 500,
};

export function httpStatusFor(code: ErrorCode): number {
  return STATUS[code];
}

/** Maps an HTTP status from a peer server back to the closest code, for clients without a JSON body. */
export function codeForHttpStatus(status: number): ErrorCode {
  switch (status) {
    case 400:
      return 'INVALID_ARGUMENT';
    case 401:
      return 'UNAUTHENTICATED';
    case 403:
      return 'FORBIDDEN';
    case 404:
      return 'NOT_FOUND';
    case 405:
      return 'METHOD_NOT_ALLOWED';
    case 409:
      return 'CONFLICT';
    case 412:
      return 'PRECONDITION_FAILED';
    case 413:
      return 'PAYLOAD_TOO_LARGE';
    case 415:
      return 'UNSUPPORTED_MEDIA_TYPE';
    case 416:
      return 'RANGE_NOT_SATISFIABLE';
    case 422:
      return 'KV_CORRUPT';
    case 429:
      return 'RATE_LIMITED';
    case 502:
      return 'ORIGIN_UNAVAILABLE';
    case 503:
      return 'ENGINE_UNAVAILABLE';
    case 504:
      return 'TIMEOUT';
    default:
      return status >= 500 ? 'INTERNAL' : 'INVALID_ARGUMENT';
  }
}

/** Writes `err` as a JSON error response (works for express and bare node:http responses). */
export function sendError(res: ServerResponse, err: unknown): void {
  const e: KdnError = toKdnError(err);
  const status = httpStatusFor(e.code);
  if (res.headersSent) {
    res.destroy(e);
    return;
  }
  // A refused request's unread body is not waited for (see slow-clients.ts).
  closeUnreadRequest(res);
  const body = JSON.stringify(e.toJSON());
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(body) });
  res.end(body);
}
