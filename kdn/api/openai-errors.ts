import type { ServerResponse } from 'node:http';
import { type KdnError, toKdnError, type ErrorCode } from '../../common/errors.ts';
import { httpStatusFor } from '../../common/http-errors.ts';
import { routesAt } from './route-table.ts';

/**
 * Paths answered in OpenAI's shapes, errors included (401s, 404s and 405s from before the routes too): those of the
 * route table's OpenAI-style routes, and anything under /v1/models/, where OpenAI's SDKs look up models.
 */
export function isOpenAIPath(path: string): boolean {
  return routesAt(path).some((route) => route.module === 'openai') || path.startsWith('/v1/models/');
}

/** OpenAI's error body: what its SDKs read into err.type, err.code and err.param; kdn's code and hint ride along. */
export interface OpenAIErrorBody {
  error: { message: string; type: string; param: string | null; code: string; kdn_code: ErrorCode; hint?: string };
}

/** OpenAI's codes for the kdn codes that have one; the rest are kdn's code in lower case. */
const OPENAI_CODES: Partial<Record<ErrorCode, string>> = {
  UNAUTHENTICATED: 'invalid_api_key',
  RATE_LIMITED: 'rate_limit_exceeded',
  CONTEXT_TOO_LONG: 'context_length_exceeded',
};

function errorType(status: number): string {
  if (status === 401) return 'authentication_error';
  if (status === 403) return 'permission_error';
  if (status === 429) return 'rate_limit_error';
  return status >= 500 ? 'server_error' : 'invalid_request_error';
}

/**
 * `details.param` and `details.openaiCode` let a route name the offending field and OpenAI's code for the error;
 * a validation failure names its first bad field.
 */
export function openAIErrorBody(err: KdnError): OpenAIErrorBody {
  const details = err.details ?? {};
  const issues = details.issues as { path: string[] }[] | undefined;
  const param = typeof details.param === 'string' ? details.param : issues?.[0]?.path.length ? issues[0].path.join('.') : null;
  const code = typeof details.openaiCode === 'string' ? details.openaiCode : (OPENAI_CODES[err.code] ?? err.code.toLowerCase());
  return {
    error: {
      message: err.message,
      type: errorType(httpStatusFor(err.code)),
      param,
      code,
      kdn_code: err.code,
      ...(err.hint ? { hint: err.hint } : {}),
    },
  };
}

/** Writes `err` as an OpenAI error response, with the status common/http-errors.ts maps its code to. */
export function sendOpenAIError(res: ServerResponse, err: unknown): void {
  const e = toKdnError(err);
  if (res.headersSent) {
    res.destroy(e);
    return;
  }
  const body = JSON.stringify(openAIErrorBody(e));
  res.writeHead(httpStatusFor(e.code), { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(body) });
  res.end(body);
}
