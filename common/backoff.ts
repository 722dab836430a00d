/**
 * Retry pacing for idempotent requests, shared by the kdn CLI client and the edge client: exponential backoff with
 * full jitter (a random wait in [0, min(cap, base * 2^attempt)]), so clients that failed together do not come back
 * together.
 */
export interface BackoffPolicy {
  /** Attempts in all, the first included. */
  attempts: number;
  baseMs: number;
  capMs: number;
}

/** The wait before retry number `retry` (1 = the first retry). */
export function backoffDelay(policy: BackoffPolicy, retry: number, random: () => number = Math.random): number {
  return Math.floor(random() * Math.min(policy.capMs, policy.baseMs * 2 ** (retry - 1)));
}

/** Resolves after `ms`, or rejects with the signal's reason once it fires. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason);
      return;
    }
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(signal!.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/** Error codes of a connection that failed or was reset without an answer: the request may be sent again. */
const TRANSIENT_SOCKET_CODES = new Set([
  'ECONNRESET',
  'ECONNREFUSED',
  'EPIPE',
  'ECONNABORTED',
  'UND_ERR_SOCKET',
  'UND_ERR_CLOSED',
  'EAI_AGAIN',
]);

/** Whether `err` (or its cause, as fetch wraps them) is a connection failure worth retrying. */
export function isTransientSocketError(err: unknown): boolean {
  for (let e: unknown = err, depth = 0; e && depth < 4; e = (e as { cause?: unknown }).cause, depth++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string' && TRANSIENT_SOCKET_CODES.has(code)) return true;
  }
  return false;
}
