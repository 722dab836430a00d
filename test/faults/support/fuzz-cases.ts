import { makeKVObject } from '../../edge/helpers.ts';
import { authHeaders } from './auth.ts';
import type { Rng } from './rng.ts';

/** One malformed request: sent through node:http, or as raw bytes on a fresh socket (malformed HTTP itself). */
export type FuzzCase =
  | { kind: 'http'; label: string; method: string; path: string; headers: Record<string, string>; body?: Buffer }
  | { kind: 'raw'; label: string; bytes: Buffer };

const JSON_TYPE = { 'content-type': 'application/json' };

/** A valid query body; every kdn JSON case breaks exactly one thing about it (or about its framing). */
const VALID_QUERY = { question: 'What does the river carry?', topK: 2, maxTokens: 4, mode: 'inject', temperature: 0 };

/** Field values each guaranteed invalid for POST /v1/query (see kdn/api/schemas.ts). */
const BAD_QUERY_FIELDS: [string, unknown[]][] = [
  ['question', ['', '   ', 42, null, true, [], {}, 'q'.repeat(8001)]],
  ['topK', [0, -1, 33, 1.5, '2', null, Number.POSITIVE_INFINITY]],
  ['maxTokens', [0, -5, 4097, 2.5, 'many', null]],
  ['mode', ['bogus', '', 1, null]],
  ['temperature', [-0.1, 2.5, 'hot', null]],
  ['seed', [-1, 0.5, 'seed', null]],
  ['namespace', ['', 'UPPER', '../etc', 'a b', '-x', 'n'.repeat(64), 7]],
  ['documents', [[], 'river', [1], [''], Array.from({ length: 33 }, (_, i) => `d${i}`), ['d'.repeat(513)], null]],
];

const BAD_UPLOAD_BODIES: unknown[] = [
  {},
  { title: 'x' },
  { text: 'x' },
  { title: '', text: 'x' },
  { title: 'x', text: '' },
  { title: 1, text: 'x' },
  { title: 'x', text: 5 },
  { title: 't'.repeat(513), text: 'x' },
  { title: 'x', text: 'y', namespace: 'BAD NS' },
  [],
  'text',
  12,
  null,
];

const BAD_CHAT_BODIES: unknown[] = [
  {},
  { messages: [] },
  { messages: 'hi' },
  { messages: [{ role: 'robot', content: 'hi' }] },
  { messages: [{ role: 'user' }] },
  { messages: [{ role: 'user', content: 'hi' }], max_tokens: 0 },
  { messages: [{ role: 'user', content: 'hi' }], temperature: 9 },
  { messages: [{ role: 'user', content: 'hi' }], kdn: { bogus: 1 } },
  { messages: [{ role: 'user', content: 'hi' }], stream: 'yes' },
  { messages: [{ role: 'user', content: 'hi' }], kdn: { topK: 0 } },
];

const BAD_COMPLETION_BODIES: unknown[] = [
  {},
  { prompt: '' },
  { prompt: 3 },
  { prompt: 'hi', max_tokens: 99999 },
  { prompt: 'hi', stop: [1] },
];

const BAD_WARM_PLAN_BODIES: unknown[] = [{ namespace: 'UP' }, { documents: [] }, { documents: 'x' }, { documents: [''] }, []];

const GARBAGE_JSON = [
  '{',
  '}',
  '[',
  '{"question":',
  '{"question": "x",}',
  "{'question': 'x'}",
  'nul',
  'undefined',
  'NaN',
  '{"a":1}{"b":2}',
  '\u0000',
  '\uFEFF{',
  '{"question": "\\ud800"',
  '[]]',
  '"unterminated',
  '{"question": 1e999999}',
];

/** Random printable-ish text, sometimes with control and high bytes. */
function junk(rng: Rng, max: number): Buffer {
  return rng.bytes(1 + rng.int(max));
}

function json(value: unknown): Buffer {
  return Buffer.from(JSON.stringify(value));
}

/** Headers with the bearer key, or (one case in five) a broken Authorization header: 4xx either way. */
function auth(rng: Rng): Record<string, string> {
  if (rng.int(5) > 0) return authHeaders();
  return rng.pick<Record<string, string>>([
    {},
    { authorization: 'Bearer' },
    { authorization: 'Bearer wrong-key' },
    { authorization: 'Basic Zm9vOmJhcg==' },
    { authorization: `Bearer ${'k'.repeat(5000)}` },
  ]);
}

function multipart(rng: Rng): { headers: Record<string, string>; body: Buffer } {
  const boundary = `----fuzz${rng.int(1e9)}`;
  const part = (name: string, value: string | Buffer, filename?: string): Buffer =>
    Buffer.concat([
      Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="${name}"${filename ? `; filename="${filename}"` : ''}\r\n\r\n`),
      Buffer.from(value),
      Buffer.from('\r\n'),
    ]);
  const end = Buffer.from(`--${boundary}--\r\n`);
  const type = `multipart/form-data; boundary=${boundary}`;
  switch (rng.int(7)) {
    case 0: // no closing boundary
      return { headers: { 'content-type': type }, body: part('file', 'some text', 'a.txt') };
    case 1: // boundary the body does not use
      return { headers: { 'content-type': 'multipart/form-data; boundary=other' }, body: Buffer.concat([part('file', 'x', 'a.txt'), end]) };
    case 2: // a file that is not UTF-8 text
      return {
        headers: { 'content-type': type },
        body: Buffer.concat([part('file', Buffer.from([0xff, 0xfe, 0x00, 0x81, 0xc3]), 'b.bin'), end]),
      };
    case 3: // two files
      return { headers: { 'content-type': type }, body: Buffer.concat([part('file', 'a', 'a.txt'), part('file', 'b', 'b.txt'), end]) };
    case 4: // the file under another field name, and no text
      return { headers: { 'content-type': type }, body: Buffer.concat([part('document', 'a', 'a.txt'), end]) };
    case 5: // no boundary parameter
      return { headers: { 'content-type': 'multipart/form-data' }, body: Buffer.concat([part('file', 'a', 'a.txt'), end]) };
    default: // an empty file and an invalid namespace
      return { headers: { 'content-type': type }, body: Buffer.concat([part('namespace', 'NOT VALID'), part('file', '', 'e.txt'), end]) };
  }
}

/** A malformed request for kdn's REST API. */
export function kdnCase(rng: Rng): FuzzCase {
  const http = (label: string, method: string, path: string, headers: Record<string, string>, body?: Buffer): FuzzCase => ({
    kind: 'http',
    label,
    method,
    path,
    headers: { ...auth(rng), ...headers },
    ...(body ? { body } : {}),
  });
  switch (rng.int(14)) {
    case 0:
    case 1: {
      const [field, values] = rng.pick(BAD_QUERY_FIELDS);
      return http(`query field ${field}`, 'POST', '/v1/query', JSON_TYPE, json({ ...VALID_QUERY, [field]: rng.pick(values) }));
    }
    case 2:
      return http('query garbage JSON', 'POST', '/v1/query', JSON_TYPE, Buffer.from(rng.pick(GARBAGE_JSON)));
    case 3:
      return http('query random bytes', 'POST', '/v1/query', JSON_TYPE, junk(rng, 2048));
    case 4:
      return http(
        'query wrong content type',
        'POST',
        '/v1/query',
        { 'content-type': rng.pick(['text/plain', 'application/xml', 'application/x-www-form-urlencoded', 'image/png']) },
        json(VALID_QUERY),
      );
    case 5:
      return rng.int(2) === 0
        ? http('query huge JSON', 'POST', '/v1/query', JSON_TYPE, json({ ...VALID_QUERY, padding: 'p'.repeat(300_000) }))
        : http('query deep JSON', 'POST', '/v1/query', JSON_TYPE, Buffer.from(`${'['.repeat(50_000)}${']'.repeat(50_000)}`));
    case 6:
      return http('upload bad fields', 'POST', '/v1/documents', JSON_TYPE, json(rng.pick(BAD_UPLOAD_BODIES)));
    case 7: {
      const { headers, body } = multipart(rng);
      return http('upload broken multipart', 'POST', '/v1/documents', headers, body);
    }
    case 8:
      return http(
        'upload wrong content type',
        'POST',
        '/v1/documents',
        { 'content-type': rng.pick(['text/plain', 'application/octet-stream', 'text/html']) },
        junk(rng, 512),
      );
    case 9:
      return rng.int(2) === 0
        ? http('chat bad body', 'POST', '/v1/chat/completions', JSON_TYPE, json(rng.pick(BAD_CHAT_BODIES)))
        : http('completion bad body', 'POST', '/v1/completions', JSON_TYPE, json(rng.pick(BAD_COMPLETION_BODIES)));
    case 10:
      return http('warm plan bad body', 'POST', '/v1/warm/plan', JSON_TYPE, json(rng.pick(BAD_WARM_PLAN_BODIES)));
    case 11: {
      const id = rng.pick(['0'.repeat(32), 'nope', 'a%20b', '..%2F..%2Fetc', 'x'.repeat(300), '%ff']);
      return rng.pick([
        http('unknown job', 'GET', `/v1/jobs/${id}`, {}),
        http('unknown document', 'GET', `/v1/documents/${id}`, {}),
        http('delete unknown document', 'DELETE', `/v1/documents/${id}`, {}),
        http('documents bad namespace', 'GET', `/v1/documents?namespace=${rng.pick(['UP', '', '..', 'a%20b', 'n'.repeat(70)])}`, {}),
      ]);
    }
    case 12:
      return http(
        'unknown route or method',
        rng.pick(['PUT', 'PATCH', 'DELETE', 'POST', 'GET']),
        rng.pick(['/v1/query', '/v1/status/x', '/v2/query', '/admin', '/v1/documents/x/y', '/%00', '/v1/../etc/passwd']),
        {},
      );
    default:
      return rawCase(rng, 'POST /v1/query', JSON.stringify(VALID_QUERY));
  }
}

/** A malformed request for an edge: bad keys, corrupt or oversized KV objects, bad /warm bodies, bad ranges. */
export function edgeCase(rng: Rng, objects: Buffer[]): FuzzCase {
  const http = (label: string, method: string, path: string, headers: Record<string, string>, body?: Buffer): FuzzCase => ({
    kind: 'http',
    label,
    method,
    path,
    headers,
    ...(body ? { body } : {}),
  });
  const missing = `fuzz/missing-${rng.int(1e6)}.kv`;
  switch (rng.int(9)) {
    case 0:
      return http(
        'bad key',
        rng.pick(['GET', 'HEAD', 'PUT', 'DELETE']),
        `/kv/${rng.pick(['', '/abs', 'a//b', 'a/./b', 'a/../b', '..', '%zz', '%2e%2e/x', 'sp%20ace', 'k'.repeat(2000), 'a%00b', '%C3%BC'])}`,
        {},
      );
    case 1:
    case 2: {
      // A valid object with bytes flipped, cut short, or with bytes added: every byte is covered by a hash.
      const body = Buffer.from(rng.pick(objects));
      const how = rng.int(3);
      if (how === 0) for (let i = 0; i < 1 + rng.int(4); i++) body[rng.int(body.length)] ^= 1 + rng.int(255);
      const mutated = how === 1 ? body.subarray(0, rng.int(body.length)) : how === 2 ? Buffer.concat([body, junk(rng, 64)]) : body;
      return http('corrupt KV object', 'PUT', `/kv/${missing}`, { 'content-type': 'application/octet-stream' }, mutated);
    }
    case 3:
      return http('random bytes as KV object', 'PUT', `/kv/${missing}`, {}, junk(rng, 4096));
    case 4:
      return http('oversized PUT', 'PUT', `/kv/${missing}`, {}, Buffer.alloc(1_100_000 + rng.int(100_000)));
    case 5:
      return http(
        'bad warm body',
        'POST',
        '/warm',
        JSON_TYPE,
        rng.int(2) === 0
          ? Buffer.from(rng.pick(GARBAGE_JSON))
          : json(
              rng.pick([
                {},
                { keys: [] },
                { keys: 'a' },
                { keys: ['../x'] },
                { keys: ['a'], concurrency: 0 },
                { keys: ['a'], extra: 1 },
                [1, 2],
              ]),
            ),
      );
    case 6:
      return http(
        'missing object, odd headers',
        rng.pick(['GET', 'HEAD']),
        `/kv/${missing}`,
        rng.pick<Record<string, string>>([
          { range: 'bytes=abc' },
          { range: 'bytes=999999999-' },
          { 'if-none-match': '*' },
          { 'if-range': 'junk', range: 'bytes=0-1' },
          { 'x-kdn-token': 'forged' },
        ]),
      );
    case 7:
      return rng.pick([
        http('bad delete query', 'DELETE', `/kv/${missing}?origin=maybe`, {}),
        http('wrong method', rng.pick(['POST', 'PATCH', 'OPTIONS']), `/kv/${missing}`, {}),
        http('wrong method on warm', rng.pick(['GET', 'PUT', 'DELETE']), '/warm', {}),
        http('unknown route', rng.pick(['GET', 'POST']), rng.pick(['/', '/kv', '/admin', '/stats/x', '/%ff']), {}),
      ]);
    default:
      return rawCase(rng, `PUT /kv/${missing}`, '');
  }
}

/** Broken HTTP on the wire: bad request lines, header syntax, framing, truncated bodies, lying lengths. */
function rawCase(rng: Rng, requestLine: string, body: string): FuzzCase {
  const [method, path] = requestLine.split(' ') as [string, string];
  const bytes = rng.pick<() => string>([
    () => `${method} ${path}\r\n\r\n`,
    () => `${method} ${path} HTTP/9.9\r\nHost: x\r\n\r\n`,
    () => `${method}  ${path} HTTP/1.1\r\nHost: x\r\n\r\n`,
    () => `${method} ${path} HTTP/1.1\r\nHost: x\r\nBad Header: y\r\n\r\n`,
    () => `${method} ${path} HTTP/1.1\r\nHost: x\r\nX-A: \u0001\u0002\r\n\r\n`,
    () => `${method} ${path} HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n`,
    () => `${method} ${path} HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello`,
    () => `${method} ${path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n`,
    () => `${method} ${path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n`,
    () => `${method} ${path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${body.length + 50}\r\n\r\n${body}`,
    () => `\u0000\u0001\u0002garbage\r\n\r\n`,
    () => `${method} ${path} HTTP/1.1\r\n${'X-Long: '.concat('a'.repeat(20_000))}\r\n${'X-Long2: '.concat('b'.repeat(20_000))}\r\n\r\n`,
  ])();
  return { kind: 'raw', label: 'malformed HTTP', bytes: Buffer.from(bytes, 'latin1') };
}

/** Valid KV objects that edge cases mutate. */
export function sampleObjects(): Buffer[] {
  return [makeKVObject(1, 8), makeKVObject(2, 24), makeKVObject(3, 64)];
}
