import { connect } from 'node:net';
import { brotliCompressSync, gzipSync } from 'node:zlib';
import { expect } from 'chai';
import { makeKVObject, tokenHeader } from '../edge/helpers.ts';
import { TEST_EDGE_SECRET } from '../../fixtures/processes.ts';
import { KEYS, startSecurityStack, type SecurityStack } from './support/stack.ts';

interface Reply {
  status: number;
  code: string | undefined;
}

async function send(url: string, method: string, headers: Record<string, string>, body: Uint8Array): Promise<Reply> {
  const res = await fetch(url, { method, headers, body });
  const text = await res.text();
  let code: string | undefined;
  try {
    code = (JSON.parse(text) as { error?: { code?: string } }).error?.code;
  } catch {
    code = undefined;
  }
  return { status: res.status, code };
}

/** Starts a request with a body it never finishes, then hangs up. */
async function abortMidBody(url: string, head: string): Promise<void> {
  const { hostname, port } = new URL(url);
  const socket = connect(Number(port), hostname);
  socket.on('error', () => undefined);
  socket.write(`${head}Host: x\r\nContent-Type: application/json\r\nContent-Length: 5000\r\n\r\n{"title": "half`);
  await new Promise((resolve) => setTimeout(resolve, 200));
  socket.destroy();
  await new Promise((resolve) => setTimeout(resolve, 200));
}

describe('security: bodies the servers cannot read', function () {
  this.timeout(60_000);
  let stack: SecurityStack;

  before(async () => {
    stack = await startSecurityStack();
  });

  after(async () => {
    await stack?.close();
  });

  it('6: unsupported Content-Encoding is 415 and a broken body 400 at kdn and the edge, with nothing at error level in the logs', async () => {
    const json = Buffer.from(JSON.stringify({ namespace: 'enc', title: 't', text: 'some text to store' }));
    const kdn = `${stack.kdn.ready.url}/v1/documents`;
    const auth = { authorization: `Bearer ${KEYS.alice}`, 'content-type': 'application/json' };
    expect(await send(kdn, 'POST', { ...auth, 'content-encoding': 'compress' }, json)).to.deep.equal({
      status: 415,
      code: 'UNSUPPORTED_MEDIA_TYPE',
    });
    expect(await send(kdn, 'POST', { ...auth, 'content-encoding': 'x-made-up' }, json)).to.deep.equal({
      status: 415,
      code: 'UNSUPPORTED_MEDIA_TYPE',
    });
    const brotli = await send(kdn, 'POST', { ...auth, 'content-encoding': 'br' }, brotliCompressSync(json));
    expect([202, 415]).to.include(brotli.status);
    const brokenGzip = gzipSync(json).subarray(0, 20);
    expect(await send(kdn, 'POST', { ...auth, 'content-encoding': 'gzip' }, brokenGzip)).to.deep.equal({
      status: 400,
      code: 'INVALID_ARGUMENT',
    });
    expect(await send(kdn, 'POST', { ...auth, 'content-encoding': 'br' }, Buffer.from('not brotli at all')))
      .to.have.property('status')
      .that.is.oneOf([400, 415]);

    const object = makeKVObject(5);
    const edge = `${stack.edge.ready.url}/kv/kv/enc/one.kv`;
    const signed = (): Record<string, string> => tokenHeader('PUT', '/kv/kv/enc/one.kv', TEST_EDGE_SECRET, object);
    expect(await send(edge, 'PUT', { ...signed(), 'content-encoding': 'br' }, object)).to.deep.equal({
      status: 415,
      code: 'UNSUPPORTED_MEDIA_TYPE',
    });
    expect(await send(edge, 'PUT', { ...signed(), 'content-encoding': 'gzip' }, object)).to.deep.equal({
      status: 415,
      code: 'UNSUPPORTED_MEDIA_TYPE',
    });

    await abortMidBody(stack.kdn.ready.url, `POST /v1/documents HTTP/1.1\r\nAuthorization: Bearer ${KEYS.alice}\r\n`);
    const edgeHead = Object.entries(tokenHeader('PUT', '/kv/kv/enc/two.kv', TEST_EDGE_SECRET, Buffer.alloc(5000)))
      .map(([k, v]) => `${k}: ${v}\r\n`)
      .join('');
    await abortMidBody(stack.edge.ready.url, `PUT /kv/kv/enc/two.kv HTTP/1.1\r\n${edgeHead}`);

    // The processes log at warn and above: none of this is the server's fault, so none of it is logged.
    for (const [name, log] of [
      ['kdn', stack.kdn.stderr()],
      ['edge', stack.edge.stderr()],
    ] as const) {
      const errors = log.split('\n').filter((line) => /"level":(50|60)/.test(line));
      expect(errors, `${name} logged errors:\n${errors.join('\n')}`).to.deep.equal([]);
      expect(log, name).to.not.contain('    at ');
    }
  });
});
