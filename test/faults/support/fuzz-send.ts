import { type Agent, request } from 'node:http';
import { connect } from 'node:net';
import type { FuzzCase } from './fuzz-cases.ts';

/** How the server dealt with a case: an HTTP status, or the connection closed without one. */
export type FuzzOutcome = { status: number } | { closed: true };

/** Past this a case counts as a hang. Generous: the servers' own header timeout is 10-30 s. */
const CASE_TIMEOUT_MS = 20_000;

/** Sends one case: http cases over the shared keep-alive agent, raw cases on their own socket. */
export function sendCase(base: URL, agent: Agent, c: FuzzCase): Promise<FuzzOutcome> {
  return c.kind === 'raw' ? sendRaw(base, c.bytes) : sendHttp(base, agent, c);
}

function sendHttp(base: URL, agent: Agent, c: Extract<FuzzCase, { kind: 'http' }>): Promise<FuzzOutcome> {
  return new Promise((resolve, reject) => {
    let status: number | undefined;
    const headers = { ...c.headers, ...(c.body ? { 'content-length': String(c.body.length) } : {}) };
    const req = request(
      { host: base.hostname, port: base.port, method: c.method, path: c.path, headers, agent, timeout: CASE_TIMEOUT_MS },
      (res) => {
        status = res.statusCode ?? 0;
        res.resume();
        res.on('end', () => resolve({ status: status! }));
        res.on('error', () => resolve({ status: status! }));
      },
    );
    req.on('timeout', () => req.destroy(new Error(`no answer in ${CASE_TIMEOUT_MS} ms to ${c.label}: ${c.method} ${c.path.slice(0, 80)}`)));
    req.on('error', (err) => {
      if ((err as Error).message.startsWith('no answer')) reject(err);
      // The server answered early (413) and closed while the body was still going out, or refused the request.
      else resolve(status === undefined ? { closed: true } : { status });
    });
    req.end(c.body);
  });
}

function sendRaw(base: URL, bytes: Buffer): Promise<FuzzOutcome> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: base.hostname, port: Number(base.port) });
    let answer = '';
    const timer = setTimeout(() => {
      socket.destroy();
      reject(
        new Error(`raw case not answered or closed in ${CASE_TIMEOUT_MS} ms: ${JSON.stringify(bytes.subarray(0, 80).toString('latin1'))}`),
      );
    }, CASE_TIMEOUT_MS);
    socket.on('data', (chunk: Buffer) => (answer += chunk.toString('latin1')));
    socket.on('error', () => undefined);
    socket.on('close', () => {
      clearTimeout(timer);
      const match = /^HTTP\/1\.[01] (\d{3})/.exec(answer);
      resolve(match ? { status: Number(match[1]) } : { closed: true });
    });
    // Half-close after the bytes: a server waiting for more of a truncated body must notice and give up.
    socket.end(bytes);
  });
}
