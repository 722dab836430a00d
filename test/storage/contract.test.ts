import { expect } from 'chai';
import { createHash, randomBytes } from 'node:crypto';
import { spawn } from 'node:child_process';
import { mkdtemp, readdir, rm, stat } from 'node:fs/promises';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { isKdnError, type ErrorCode } from '../../common/errors.ts';
import { FsStore } from '../../storage/fs-store.ts';
import type { ObjectInfo, ObjectStore } from '../../storage/object-store.ts';
import { openStore } from '../../storage/open-store.ts';
import { S3Store } from '../../storage/s3-store.ts';
import { requireRadosgw, startRadosgw } from '../support/radosgw.ts';
import { startS3rver, S3RVER_ACCESS_KEY, S3RVER_SECRET_KEY, type RunningS3rver } from '../support/s3rver.ts';

const MIB = 1024 * 1024;
/** Big enough to take three 5 MiB parts on S3. */
const LARGE = 12 * MIB;

interface Harness {
  store: ObjectStore;
  /** For backends that upload in parts: the multipart requests the server saw for `key`. */
  multipartRequests?(key: string): MultipartRequests;
  close(): Promise<void>;
}

interface MultipartRequests {
  created: number;
  parts: number;
  completed: number;
  aborted: number;
}

/** The behaviour every ObjectStore backend must share, run against a store from `open`. */
function objectStoreContract(name: string, open: (suite: Mocha.Context) => Promise<Harness>): void {
  describe(`ObjectStore contract: ${name}`, () => {
    let harness: Harness;
    let store: ObjectStore;
    let n = 0;
    /** A key namespace of its own for each test, so tests never see each other's objects. */
    const ns = (): string => `t${++n}-${randomBytes(3).toString('hex')}`;

    before(async function () {
      harness = await open(this);
      store = harness.store;
    });
    after(async () => {
      await harness?.close();
    });

    it('round-trips Buffer, Uint8Array and stream bodies, and head() agrees with put()', async () => {
      const p = ns();
      const data = randomBytes(100_000);
      const put = await store.put(`${p}/buf`, data);
      expect(put).to.include({ key: `${p}/buf`, size: data.length });
      expect(put.etag).to.be.a('string').and.not.equal('');
      expect(Buffer.compare(await store.get(`${p}/buf`), data)).to.equal(0);
      const head = await store.head(`${p}/buf`);
      expect(head).to.include({ key: `${p}/buf`, size: data.length, etag: put.etag });
      expect(head?.lastModified).to.be.instanceOf(Date);

      await store.put(`${p}/u8`, new Uint8Array(data.buffer, data.byteOffset, 1000));
      expect(Buffer.compare(await store.get(`${p}/u8`), data.subarray(0, 1000))).to.equal(0);

      const streamed = await store.put(`${p}/stream`, Readable.from([data.subarray(0, 40_000), data.subarray(40_000)]));
      expect(streamed.size).to.equal(data.length);
      const { info, stream, range } = await store.getStream(`${p}/stream`);
      expect(range).to.equal(undefined);
      expect(info).to.include({ size: data.length, etag: streamed.etag });
      expect(Buffer.compare(await collect(stream), data)).to.equal(0);
    });

    it('stores empty objects', async () => {
      const key = `${ns()}/empty`;
      expect((await store.put(key, Buffer.alloc(0))).size).to.equal(0);
      expect((await store.get(key)).length).to.equal(0);
      expect((await store.head(key))?.size).to.equal(0);
      await store.put(key, Readable.from([]));
      expect((await collect((await store.getStream(key)).stream)).length).to.equal(0);
    });

    it('overwrites: readers get the new bytes and a new etag', async () => {
      const key = `${ns()}/obj`;
      const first = await store.put(key, Buffer.from('first version'));
      const second = await store.put(key, Buffer.from('second, longer version'));
      expect(second.etag).to.not.equal(first.etag);
      expect((await store.get(key)).toString()).to.equal('second, longer version');
      expect(await store.head(key)).to.include({ size: 22, etag: second.etag });
    });

    it('serves inclusive byte ranges and rejects impossible ones', async () => {
      const key = `${ns()}/ranged`;
      const data = randomBytes(1000);
      await store.put(key, data);
      const read = async (start: number, end?: number): Promise<{ bytes: Buffer; range: unknown; size: number }> => {
        const got = await store.getStream(key, { range: end === undefined ? { start } : { start, end } });
        return { bytes: await collect(got.stream), range: got.range, size: got.info.size };
      };

      const middle = await read(10, 19);
      expect(middle.range).to.deep.equal({ start: 10, end: 19 });
      expect(Buffer.compare(middle.bytes, data.subarray(10, 20))).to.equal(0);
      expect(middle.size, 'info.size is the whole object').to.equal(1000);

      const open = await read(900);
      expect(open.range).to.deep.equal({ start: 900, end: 999 });
      expect(Buffer.compare(open.bytes, data.subarray(900))).to.equal(0);

      const last = await read(999, 999);
      expect([...last.bytes]).to.deep.equal([data[999]]);

      const clamped = await read(990, 5000);
      expect(clamped.range).to.deep.equal({ start: 990, end: 999 });
      expect(Buffer.compare(clamped.bytes, data.subarray(990))).to.equal(0);

      await expectCode(store.getStream(key, { range: { start: 1000 } }), 'RANGE_NOT_SATISFIABLE');
      await expectCode(store.getStream(key, { range: { start: 5000, end: 6000 } }), 'RANGE_NOT_SATISFIABLE');
      await expectCode(store.getStream(key, { range: { start: 20, end: 10 } }), 'RANGE_NOT_SATISFIABLE');
      await expectCode(store.getStream(key, { range: { start: -1, end: 10 } }), 'INVALID_ARGUMENT');
      await expectCode(store.getStream(key, { range: { start: 1.5 } }), 'INVALID_ARGUMENT');

      const empty = `${key}-empty`;
      await store.put(empty, Buffer.alloc(0));
      await expectCode(store.getStream(empty, { range: { start: 0 } }), 'RANGE_NOT_SATISFIABLE');
    });

    it('reports a missing object: head() null, get() and getStream() NOT_FOUND', async () => {
      const key = `${ns()}/nothing-here`;
      expect(await store.head(key)).to.equal(null);
      await expectCode(store.get(key), 'NOT_FOUND');
      await expectCode(store.getStream(key), 'NOT_FOUND');
      await expectCode(store.getStream(key, { range: { start: 0, end: 1 } }), 'NOT_FOUND');
    });

    it('deletes, saying whether an object was removed', async () => {
      const p = ns();
      await store.put(`${p}/doomed`, Buffer.from('x'));
      await store.put(`${p}/kept`, Buffer.from('y'));
      expect(await store.delete(`${p}/doomed`)).to.equal(true);
      expect(await store.head(`${p}/doomed`)).to.equal(null);
      await expectCode(store.get(`${p}/doomed`), 'NOT_FOUND');
      expect(await store.delete(`${p}/doomed`)).to.equal(false);
      expect(await store.delete(`${p}/never-was`)).to.equal(false);
      expect((await store.get(`${p}/kept`)).toString()).to.equal('y');
      expect(await keysOf(store.list(`${p}/`))).to.deep.equal([`${p}/kept`]);
    });

    it('lists by prefix in key order across pages', async () => {
      const p = ns();
      // Names chosen so that tree order and key order differ: "a-b" < "a/..." < "a0" as strings.
      const keys = [
        `${p}/a-b`,
        `${p}/a/x`,
        `${p}/a/y/z`,
        `${p}/a0`,
        `${p}/b`,
        `${p}/b.kv`,
        `${p}/c/d/e/f`,
        `${p}x/outside`,
        ...Array.from({ length: 20 }, (_, i) => `${p}/many/k${String(i).padStart(2, '0')}`),
      ];
      for (const key of [...keys].reverse()) await store.put(key, Buffer.from(key));
      const inside = keys.filter((k) => k.startsWith(`${p}/`)).sort();

      const listed: ObjectInfo[] = [];
      for await (const info of store.list(`${p}/`)) listed.push(info);
      expect(listed.map((i) => i.key)).to.deep.equal(inside);
      for (const info of listed) expect(info.size).to.equal(Buffer.byteLength(info.key));
      expect(listed.every((i) => i.etag !== '' && i.lastModified instanceof Date)).to.equal(true);

      expect(await keysOf(store.list(`${p}/a`))).to.deep.equal([`${p}/a-b`, `${p}/a/x`, `${p}/a/y/z`, `${p}/a0`]);
      expect(await keysOf(store.list(`${p}/a/`))).to.deep.equal([`${p}/a/x`, `${p}/a/y/z`]);
      expect(await keysOf(store.list(`${p}/many/k1`))).to.have.length(10);
      expect(await keysOf(store.list(p))).to.deep.equal([...inside, `${p}x/outside`]);
      expect(await keysOf(store.list(`${p}/nope/`))).to.deep.equal([]);
    });

    it('rejects bad keys and prefixes with INVALID_KEY before touching storage', async () => {
      for (const key of ['../escape', '/abs', 'a//b', 'a/./b', 'sp ace', 'a/', '']) {
        await expectCode(store.put(key, Buffer.from('x')), 'INVALID_KEY');
        await expectCode(store.get(key), 'INVALID_KEY');
        await expectCode(store.getStream(key), 'INVALID_KEY');
        await expectCode(store.head(key), 'INVALID_KEY');
        await expectCode(store.delete(key), 'INVALID_KEY');
      }
      await expectCode(keysOf(store.list('../')), 'INVALID_KEY');
      await expectCode(keysOf(store.list('/abs/')), 'INVALID_KEY');
    });

    it(`streams a ${LARGE / MIB} MiB object of unknown length in and out`, async () => {
      const key = `${ns()}/large.kv`;
      const source = randomStream(LARGE);
      const info = await store.put(key, source.stream);
      expect(info.size).to.equal(LARGE);
      expect(harness.multipartRequests?.(key) ?? null).to.deep.equal(
        harness.multipartRequests ? { created: 1, parts: 3, completed: 1, aborted: 0 } : null,
      );
      const got = await store.getStream(key);
      expect(got.info.size).to.equal(LARGE);
      expect(await sha256(got.stream)).to.equal(source.digest());
      const tail = await store.getStream(key, { range: { start: LARGE - 10 } });
      expect((await collect(tail.stream)).length).to.equal(10);
    });

    it('a put whose body fails mid-way stores nothing and keeps the old object', async () => {
      const p = ns();
      await expectCode(store.put(`${p}/new`, failingStream(300_000)), 'STORAGE_ERROR');
      expect(await store.head(`${p}/new`)).to.equal(null);

      await store.put(`${p}/old`, Buffer.from('old content'));
      // Past the first 5 MiB part, so on S3 this fails inside a multipart upload that must be aborted.
      await expectCode(store.put(`${p}/old`, failingStream(6 * MIB)), 'STORAGE_ERROR');
      if (harness.multipartRequests) expect(harness.multipartRequests(`${p}/old`)).to.include({ created: 1, completed: 0, aborted: 1 });
      expect((await store.get(`${p}/old`)).toString()).to.equal('old content');
      expect(await keysOf(store.list(`${p}/`))).to.deep.equal([`${p}/old`]);
    });

    it('a put cancelled through its signal stores nothing', async () => {
      const key = `${ns()}/cancelled`;
      const controller = new AbortController();
      const body = endlessStream();
      setTimeout(() => controller.abort(), 100);
      await expectCode(store.put(key, body, { signal: controller.signal }), 'STORAGE_ERROR');
      expect(body.destroyed, 'the body is released').to.equal(true);
      expect(await store.head(key)).to.equal(null);
    });
  });
}

objectStoreContract('file', async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 'kdn-fs-store-'));
  const store = new FsStore(dir);
  return {
    store,
    close: async () => {
      await store.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
});

objectStoreContract('s3 (s3rver over HTTP)', async () => {
  const s3 = await startS3rver();
  // Small list pages force pagination; 5 MiB parts (S3's minimum) make the 12 MiB object three parts.
  const store = openStore(s3.url, { s3: { listPageSize: 10, partSize: 5 * MIB, timeoutMs: 5000 } });
  return {
    store,
    multipartRequests: (key) => {
      const seen = s3.requests.filter((r) => r.url.split('?')[0] === `/${s3.bucket}/${key}`);
      const count = (method: string, query: RegExp): number => seen.filter((r) => r.method === method && query.test(r.url)).length;
      return {
        created: count('POST', /[?&]uploads(=|&|$)/),
        parts: count('PUT', /[?&]partNumber=/),
        completed: count('POST', /[?&]uploadId=/),
        aborted: count('DELETE', /[?&]uploadId=/),
      };
    },
    close: async () => {
      await store.close();
      await s3.stop();
    },
  };
});

// A real S3 server beside the mock: Ceph's radosgw on loopback (test/support/radosgw/start.sh).
objectStoreContract('s3 (Ceph radosgw over HTTP)', async (suite) => {
  requireRadosgw(suite);
  const rgw = await startRadosgw();
  const store = openStore(rgw.url, { s3: { listPageSize: 10, partSize: 5 * MIB, timeoutMs: 10_000 } });
  return {
    store,
    close: async () => {
      await store.close();
      await rgw.stop();
    },
  };
});

describe('FsStore specifics', () => {
  let dir: string;
  let store: FsStore;
  beforeEach(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'kdn-fs-store-'));
    store = new FsStore(dir);
  });
  afterEach(async () => {
    await store.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('leaves no temp file behind when a body fails mid-way', async () => {
    await expectCode(store.put('a/b', failingStream(200_000)), 'STORAGE_ERROR');
    expect(await readdir(path.join(dir, '.tmp'))).to.deep.equal([]);
    expect(await keysOf(store.list(''))).to.deep.equal([]);
  });

  it('never shows a concurrent reader a partial object', async () => {
    const size = 4 * MIB;
    const key = 'hot/object';
    await store.put(key, Buffer.alloc(size, 0));
    let writing = true;
    const writer = (async () => {
      for (let i = 1; i <= 12; i++) {
        const fill = i % 256;
        // Streamed in small chunks so each put spends a while half-written in its temp file.
        await store.put(key, Readable.from(Array.from({ length: 64 }, () => Buffer.alloc(size / 64, fill))));
      }
      writing = false;
    })();
    let reads = 0;
    const reader = async (): Promise<void> => {
      while (writing) {
        const bytes = reads % 2 === 0 ? await store.get(key) : await collect((await store.getStream(key)).stream);
        reads++;
        expect(bytes.length).to.equal(size);
        expect(bytes.equals(Buffer.alloc(size, bytes[0])), 'object mixes two versions').to.equal(true);
      }
    };
    await Promise.all([writer, reader(), reader()]);
    console.log(`      concurrent reads checked: ${reads}`);
    expect(reads).to.be.greaterThan(0);
  });

  it('a writer killed mid-put leaves no visible object, and a later store sweeps its temp file', async function () {
    this.timeout(30_000);
    const storeModule = fileURLToPath(new URL('../../storage/fs-store.ts', import.meta.url));
    const script = `
      import { Readable } from 'node:stream';
      import { FsStore } from ${JSON.stringify(storeModule)};
      const store = new FsStore(${JSON.stringify(dir)});
      async function* forever() { for (;;) { yield Buffer.alloc(65536, 7); await new Promise((r) => setTimeout(r, 5)); } }
      await store.put('crash/victim', Readable.from(forever()));`;
    const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    try {
      const temp = await waitFor(async () => {
        if (child.exitCode !== null) throw new Error(`the writer exited early (${child.exitCode}): ${stderr}`);
        const names = await readdir(path.join(dir, '.tmp')).catch(() => [] as string[]);
        const sizes = await Promise.all(names.map((name) => stat(path.join(dir, '.tmp', name)).then((s) => s.size)));
        return sizes.some((s) => s > 256 * 1024) ? names : null;
      });
      child.kill('SIGKILL');
      await new Promise((resolve) => child.once('exit', resolve));
      expect(temp).to.have.length(1);
    } finally {
      child.kill('SIGKILL');
    }
    expect(await store.head('crash/victim')).to.equal(null);
    await expectCode(store.get('crash/victim'), 'NOT_FOUND');
    expect(await keysOf(store.list(''))).to.deep.equal([]);
    expect(await readdir(path.join(dir, '.tmp'))).to.have.length(1);

    const restarted = new FsStore(dir, { staleTempMs: 0 });
    await restarted.close();
    expect(await readdir(path.join(dir, '.tmp'))).to.deep.equal([]);
  });

  it('keeps a key named like its temp area apart from it', async () => {
    await store.put('.tmp/x', Buffer.from('not a temp file'));
    expect((await store.get('.tmp/x')).toString()).to.equal('not a temp file');
    expect(await keysOf(store.list(''))).to.deep.equal(['.tmp/x']);
  });

  it('answers CONFLICT when a key would need a file to be a folder, or the reverse', async () => {
    await store.put('a/b', Buffer.from('1'));
    await expectCode(store.put('a', Buffer.from('2')), 'CONFLICT');
    await store.put('c', Buffer.from('3'));
    await expectCode(store.put('c/d', Buffer.from('4')), 'CONFLICT');
    expect(await store.head('c/d')).to.equal(null);
    expect(await keysOf(store.list(''))).to.deep.equal(['a/b', 'c']);
    expect(await readdir(path.join(dir, '.tmp'))).to.deep.equal([]);
  });

  it('prunes folders a delete leaves empty', async () => {
    await store.put('deep/er/still/obj', Buffer.from('x'));
    await store.delete('deep/er/still/obj');
    expect(await readdir(path.join(dir, 'objects'))).to.deep.equal([]);
    await store.put('deep/er/again', Buffer.from('y'));
    expect((await store.get('deep/er/again')).toString()).to.equal('y');
  });
});

describe('S3Store specifics', () => {
  let s3: RunningS3rver;
  before(async () => {
    s3 = await startS3rver();
  });
  after(async () => {
    await s3?.stop();
  });

  const credentials = { accessKeyId: S3RVER_ACCESS_KEY, secretAccessKey: S3RVER_SECRET_KEY };

  it('keeps stores with different key prefixes in one bucket apart', async () => {
    const left = new S3Store({ bucket: s3.bucket, endpoint: s3.endpoint, credentials, prefix: 'left' });
    const right = new S3Store({ bucket: s3.bucket, endpoint: s3.endpoint, credentials, prefix: 'right/' });
    try {
      await left.put('k', Buffer.from('L'));
      await right.put('k', Buffer.from('R'));
      expect((await left.get('k')).toString()).to.equal('L');
      expect((await right.get('k')).toString()).to.equal('R');
      expect(await keysOf(left.list(''))).to.deep.equal(['k']);
      expect(await left.delete('k')).to.equal(true);
      expect(await right.head('k')).to.not.equal(null);
    } finally {
      await left.close();
      await right.close();
    }
  });

  it('gives ORIGIN_UNAVAILABLE for an endpoint that refuses connections', async function () {
    this.timeout(10_000);
    const port = await closedPort();
    const store = new S3Store({ bucket: 'b1x', endpoint: `http://127.0.0.1:${port}`, credentials, timeoutMs: 1000, maxAttempts: 1 });
    try {
      await expectCode(store.head('k'), 'ORIGIN_UNAVAILABLE');
      await expectCode(store.get('k'), 'ORIGIN_UNAVAILABLE');
      await expectCode(store.put('k', Buffer.from('x')), 'ORIGIN_UNAVAILABLE');
      await expectCode(store.put('k', Readable.from([Buffer.from('x')])), 'ORIGIN_UNAVAILABLE');
      await expectCode(keysOf(store.list('')), 'ORIGIN_UNAVAILABLE');
    } finally {
      await store.close();
    }
  });

  it('gives ORIGIN_UNAVAILABLE, not a hang, for an endpoint that accepts and never answers', async function () {
    this.timeout(10_000);
    const sockets = new Set<Socket>();
    const silent: Server = createServer((socket) => {
      sockets.add(socket);
      socket.on('error', () => undefined);
    });
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    const { port } = silent.address() as { port: number };
    const store = openStore(`s3://b1x?endpoint=http://127.0.0.1:${port}&accessKeyId=a&secretAccessKey=b&timeoutMs=300`, {
      s3: { maxAttempts: 1 },
    });
    try {
      await expectCode(store.head('k'), 'ORIGIN_UNAVAILABLE');
      await expectCode(store.getStream('k'), 'ORIGIN_UNAVAILABLE');
      await expectCode(store.put('k', Buffer.from('x')), 'ORIGIN_UNAVAILABLE');
    } finally {
      await store.close();
      for (const socket of sockets) socket.destroy();
      await new Promise((resolve) => silent.close(resolve));
    }
  });

  it('says STORAGE_ERROR with a hint for a bucket that does not exist', async () => {
    const store = new S3Store({ bucket: 'no-such-bucket', endpoint: s3.endpoint, credentials });
    try {
      const err = await expectCode(store.put('k', Buffer.from('x')), 'STORAGE_ERROR');
      expect(err.hint).to.match(/create the bucket/);
    } finally {
      await store.close();
    }
  });
});

async function expectCode(promise: Promise<unknown>, code: ErrorCode): Promise<{ code: string; hint: string | undefined }> {
  let caught: unknown;
  try {
    await promise;
  } catch (err) {
    caught = err;
  }
  expect(caught, `expected a KdnError ${code}`).to.not.equal(undefined);
  expect(isKdnError(caught) ? caught.code : caught).to.equal(code);
  return caught as { code: string; hint: string | undefined };
}

async function keysOf(listing: AsyncIterable<ObjectInfo>): Promise<string[]> {
  const keys: string[] = [];
  for await (const info of listing) keys.push(info.key);
  return keys;
}

async function collect(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

async function sha256(stream: Readable): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of stream) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

/** A stream of `size` random bytes in 64 KiB chunks, and the sha256 of what it produced. */
function randomStream(size: number): { stream: Readable; digest(): string } {
  const hash = createHash('sha256');
  async function* chunks(): AsyncGenerator<Buffer> {
    for (let left = size; left > 0; left -= 65536) {
      const chunk = randomBytes(Math.min(65536, left));
      hash.update(chunk);
      yield chunk;
    }
  }
  return { stream: Readable.from(chunks(), { objectMode: false }), digest: () => hash.digest('hex') };
}

/** A body that errors after `bytes` bytes. */
function failingStream(bytes: number): Readable {
  async function* chunks(): AsyncGenerator<Buffer> {
    for (let sent = 0; sent < bytes; sent += 65536) yield Buffer.alloc(65536, 1);
    await new Promise((resolve) => setTimeout(resolve, 20));
    throw new Error('body source failed');
  }
  return Readable.from(chunks(), { objectMode: false });
}

/** A body that never ends, trickling 64 KiB every 5 ms. */
function endlessStream(): Readable {
  async function* chunks(): AsyncGenerator<Buffer> {
    for (;;) {
      yield Buffer.alloc(65536, 2);
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
  }
  return Readable.from(chunks(), { objectMode: false });
}

async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise((resolve) => server.close(resolve));
  return port;
}

async function waitFor<T>(probe: () => Promise<T | null>, timeoutMs = 20_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== null) return value;
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}
