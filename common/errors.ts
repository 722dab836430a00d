/**
 * Every error KDN raises on purpose is a KdnError: a stable `code` a client can match on, a message that says
 * what went wrong, and a `hint` that says what to do next. HTTP status mapping lives in ./http-errors.ts only.
 */

export const ERROR_CODES = [
  // input
  'INVALID_ARGUMENT',
  'INVALID_KEY',
  'PAYLOAD_TOO_LARGE',
  'UNSUPPORTED_MEDIA_TYPE',
  'NOT_FOUND',
  'METHOD_NOT_ALLOWED',
  'CONFLICT',
  'PRECONDITION_FAILED',
  'RANGE_NOT_SATISFIABLE',
  // auth and tenancy
  'UNAUTHENTICATED',
  'FORBIDDEN',
  'RATE_LIMITED',
  // KV objects
  'KV_CORRUPT',
  'KV_MISMATCH',
  'KV_UNSUPPORTED',
  // models and engine
  'MODEL_INVALID',
  'MODEL_UNSUPPORTED',
  'ENGINE_UNAVAILABLE',
  'CONTEXT_TOO_LONG',
  // infrastructure
  'ORIGIN_UNAVAILABLE',
  'ORIGIN_TIMEOUT',
  'EDGE_UNAVAILABLE',
  'STORAGE_ERROR',
  // a client could not reach its server at all (refused, reset, DNS)
  'UNAVAILABLE',
  'TIMEOUT',
  // work stopped on purpose: its job was cancelled or its client went away
  'CANCELLED',
  'INTERNAL',
] as const;

export type ErrorCode = (typeof ERROR_CODES)[number];

export interface KdnErrorOptions {
  hint?: string;
  cause?: unknown;
  details?: Record<string, unknown>;
}

export class KdnError extends Error {
  readonly code: ErrorCode;
  readonly hint: string | undefined;
  readonly details: Record<string, unknown> | undefined;

  constructor(code: ErrorCode, message: string, options: KdnErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'KdnError';
    this.code = code;
    this.hint = options.hint;
    this.details = options.details;
  }

  /** The JSON body every server sends for this error. */
  toJSON(): ErrorBody {
    return {
      error: {
        code: this.code,
        message: this.message,
        ...(this.hint ? { hint: this.hint } : {}),
        ...(this.details ? { details: this.details } : {}),
      },
    };
  }
}

/** Wire shape of an error response, shared by kdn and the edges. */
export interface ErrorBody {
  error: { code: ErrorCode; message: string; hint?: string; details?: Record<string, unknown> };
}

export function isKdnError(err: unknown, code?: ErrorCode): err is KdnError {
  return err instanceof KdnError && (code === undefined || err.code === code);
}

/**
 * A KdnError as it crosses a thread boundary: a structured clone keeps plain fields, not the class, so threads post
 * this and the receiver rebuilds the error with fromWireError.
 */
export interface WireError {
  code: ErrorCode;
  message: string;
  hint?: string;
}

/** What a thread posts for anything it caught. */
export function toWireError(err: unknown): WireError {
  const e = toKdnError(err);
  return { code: e.code, message: e.message, ...(e.hint ? { hint: e.hint } : {}) };
}

export function fromWireError(error: WireError): KdnError {
  return new KdnError(error.code, error.message, error.hint ? { hint: error.hint } : {});
}

/** Wraps anything thrown into a KdnError, keeping KdnErrors as they are. */
export function toKdnError(err: unknown, fallback: ErrorCode = 'INTERNAL'): KdnError {
  if (err instanceof KdnError) return err;
  const message = err instanceof Error ? err.message : String(err);
  return new KdnError(fallback, message, { cause: err });
}
