import { createHash } from 'node:crypto';
import { expect } from 'chai';
import { Packr } from 'msgpackr';
import { compressSync } from 'lz4-napi';
import {
  KV_FORMAT_VERSION,
  codecFromString,
  decodeKVObject,
  encodeKVObject,
  readKVHeader,
  readKVObject,
  verifyKVObject,
} from '../../storage/kv-object/index.ts';
import type { KVExpectation, KVHeader } from '../../storage/kv-object/types.ts';
import { isKdnError, type ErrorCode } from '../../common/errors.ts';
import { layerDigest } from '../../storage/kv-object/layer-digest.ts';
import { asAsync, chunked, kvTensors, rng, tokenIds } from '../../fixtures/kv-data.ts';

const CODECS = ['fp16', 'int8', 'int4', 'fp16+lz4', 'int8+lz4', 'int4+lz4'];
const REJECT: ErrorCode[] = ['KV_CORRUPT', 'KV_MISMATCH', 'KV_UNSUPPORTED'];
const SHAPE = { layers: 3, kvHeads: 2, headDim: 8, tokens: 37 };
const IDS = tokenIds(SHAPE.tokens);

function valid(codec: string): Buffer {
  return encodeKVObject(kvTensors(SHAPE, 3), { modelFingerprint: 'model-a', tokenIds: IDS, codec: codecFromString(codec) });
}

function codeOf(fn: () => unknown): ErrorCode | 'none' {
  try {
    fn();
  } catch (err) {
    if (isKdnError(err)) return err.code;
    throw err; // anything but a KdnError is a crash
  }
  return 'none';
}

async function asyncCodeOf(fn: () => Promise<unknown>): Promise<ErrorCode | 'none'> {
  try {
    await fn();
  } catch (err) {
    if (isKdnError(err)) return err.code;
    throw err;
  }
  return 'none';
}

/**
 * Streams `bytes` in random chunks; returns the rejection code and checks that every layer it yielded before
 * rejecting is byte-identical to the intact object's layer.
 */
async function streamCode(bytes: Uint8Array, intact: Uint8Array[], seed: number, expect_?: KVExpectation): Promise<ErrorCode | 'none'> {
  const random = rng(seed);
  return asyncCodeOf(async () => {
    const reader = await readKVObject(asAsync(chunked(bytes, () => Math.floor(random() * 300))), expect_);
    for await (const block of reader.layers) {
      expect(Buffer.from(block.encoded).equals(intact[block.layer]!), `layer ${block.layer} yielded corrupted`).to.equal(true);
      block.decode();
    }
  });
}

async function encodedLayers(bytes: Uint8Array): Promise<Uint8Array[]> {
  const out: Uint8Array[] = [];
  for await (const block of (await readKVObject(asAsync([bytes]))).layers) out.push(Buffer.from(block.encoded));
  return out;
}

/** All three readers must reject `bytes` with one of the KV codes. */
async function expectRejected(bytes: Uint8Array, intact: Uint8Array[], seed: number, what: string, expect_?: KVExpectation): Promise<void> {
  const codes = [
    codeOf(() => verifyKVObject(bytes, expect_)),
    codeOf(() => decodeKVObject(bytes, expect_)),
    await streamCode(bytes, intact, seed, expect_),
  ];
  for (const code of codes) expect(REJECT, `${what}: got ${code}`).to.include(code);
}

/** A whole object with `header` (any value) and a correct header hash, followed by `payload`. */
function hostile(header: unknown, payload: Uint8Array = new Uint8Array(0), version = KV_FORMAT_VERSION): Buffer {
  const body = new Packr({ useRecords: false }).pack(header);
  const pre = Buffer.alloc(10);
  pre.write('KDNKV', 0, 'ascii');
  pre[5] = version;
  pre.writeUInt32LE(body.length, 6);
  return Buffer.concat([pre, body, createHash('sha256').update(body).digest(), payload]);
}

function payloadOf(bytes: Buffer): Buffer {
  return bytes.subarray(42 + bytes.readUInt32LE(6));
}

describe('kv-object corruption: damaged, truncated and hostile objects are rejected, never crash', () => {
  for (const codec of CODECS) {
    it(`${codec}: 300 single-byte flips, 100 garbage runs, 100 truncations, appended bytes`, async () => {
      const good = valid(codec);
      const intact = await encodedLayers(good);
      expect(verifyKVObject(good).layers).to.equal(SHAPE.layers);
      const random = rng(codec.length * 1000 + good.length);
      for (let k = 0; k < 300; k++) {
        const bad = Buffer.from(good);
        const at = Math.floor(random() * bad.length);
        bad[at]! ^= 1 + Math.floor(random() * 255);
        await expectRejected(bad, intact, k, `flip at ${at}/${bad.length}`);
      }
      for (let k = 0; k < 100; k++) {
        const bad = Buffer.from(good);
        const at = Math.floor(random() * bad.length);
        const len = 1 + Math.floor(random() * 64);
        for (let i = at; i < Math.min(at + len, bad.length); i++) bad[i] = Math.floor(random() * 256);
        if (bad.equals(good)) continue;
        await expectRejected(bad, intact, k, `garbage at ${at}+${len}`);
      }
      for (let k = 0; k < 100; k++) {
        const cut = Math.floor(random() * good.length);
        await expectRejected(good.subarray(0, cut), intact, k, `truncated to ${cut}`);
      }
      await expectRejected(Buffer.concat([good, Buffer.from([0])]), intact, 1, 'one byte appended');
      await expectRejected(new Uint8Array(0), intact, 1, 'empty');
    });
  }

  it('rejects hostile headers that carry a valid header hash', async () => {
    const good = valid('int8');
    const base = readKVHeader(good);
    const payload = payloadOf(good);
    const with_ = (patch: Record<string, unknown>): Buffer => hostile({ ...base, ...patch }, payload);
    const cases: Array<[string, Buffer, ErrorCode]> = [
      ['huge tokens', with_({ tokens: 2 ** 40 }), 'KV_CORRUPT'],
      ['tokens over the element cap', with_({ tokens: 1 << 20, kvHeads: 1024, headDim: 128 }), 'KV_CORRUPT'],
      ['negative tokens', with_({ tokens: -5 }), 'KV_CORRUPT'],
      ['fractional headDim', with_({ headDim: 8.5 }), 'KV_CORRUPT'],
      ['string layers', with_({ layers: '3' }), 'KV_CORRUPT'],
      ['zero layers', with_({ layers: 0, layerOffsets: [0], layerChecksums: [] }), 'KV_CORRUPT'],
      ['a million layers', with_({ layers: 1e6 }), 'KV_CORRUPT'],
      ['negative positionBase', with_({ positionBase: -1 }), 'KV_CORRUPT'],
      ['non-monotonic offsets', with_({ layerOffsets: [0, 500, 100, payload.length] }), 'KV_CORRUPT'],
      ['offsets not the codec size', with_({ layerOffsets: [0, 10, 20, 30] }), 'KV_CORRUPT'],
      ['absurd last offset', with_({ layerOffsets: [...base.layerOffsets.slice(0, 3), 2 ** 52] }), 'KV_CORRUPT'],
      ['too few offsets', with_({ layerOffsets: base.layerOffsets.slice(0, 2) }), 'KV_CORRUPT'],
      ['offsets[0] not 0', with_({ layerOffsets: base.layerOffsets.map((o) => o + 1) }), 'KV_CORRUPT'],
      ['missing checksum', with_({ layerChecksums: base.layerChecksums.slice(1) }), 'KV_CORRUPT'],
      ['payload checksum unrelated', with_({ payloadChecksum: 'a'.repeat(64) }), 'KV_CORRUPT'],
      ['tokenHash not hex', with_({ tokenHash: 'z'.repeat(64) }), 'KV_CORRUPT'],
      ['empty fingerprint', with_({ modelFingerprint: '' }), 'KV_CORRUPT'],
      ['unknown codec', with_({ codec: { name: 'int3', lz4: false, groupSize: 32 } }), 'KV_UNSUPPORTED'],
      ['zero group size', with_({ codec: { name: 'int8', lz4: false, groupSize: 0 } }), 'KV_UNSUPPORTED'],
      ['huge group size', with_({ codec: { name: 'int8', lz4: false, groupSize: 2 ** 31 } }), 'KV_UNSUPPORTED'],
      ['version 3 in header', with_({ version: 3 }), 'KV_UNSUPPORTED'],
      ['version 3 in preamble', hostile(base, payload, 3), 'KV_UNSUPPORTED'],
      ['header and preamble versions differ', hostile({ ...base, version: 1 }, payload, 2), 'KV_CORRUPT'],
      ['extra header field', with_({ evil: true }), 'KV_CORRUPT'],
      ['header is an array', hostile([1, 2, 3], payload), 'KV_CORRUPT'],
      ['header is a number', hostile(42, payload), 'KV_CORRUPT'],
      ['header is null', hostile(null, payload), 'KV_CORRUPT'],
    ];
    const absurdLength = Buffer.from(good);
    absurdLength.writeUInt32LE(0xffffffff, 6);
    cases.push(['header length 4 GiB', absurdLength, 'KV_CORRUPT']);
    const bigLength = Buffer.from(good);
    bigLength.writeUInt32LE((1 << 20) + 1, 6);
    cases.push(['header length over 1 MiB', bigLength, 'KV_CORRUPT']);
    const zeroLength = Buffer.from(good);
    zeroLength.writeUInt32LE(0, 6);
    cases.push(['header length 0', zeroLength, 'KV_CORRUPT']);
    const notMsgpack = Buffer.from([0xc1, 0xc1, 0xdd, 0xff, 0xff, 0xff, 0xff]);
    const pre = Buffer.alloc(10);
    pre.write('KDNKV', 0, 'ascii');
    pre[5] = 1;
    pre.writeUInt32LE(notMsgpack.length, 6);
    cases.push(['header not msgpack', Buffer.concat([pre, notMsgpack, createHash('sha256').update(notMsgpack).digest()]), 'KV_CORRUPT']);
    cases.push(['not a KV object', Buffer.from('GET / HTTP/1.1\r\n\r\n'.repeat(4)), 'KV_CORRUPT']);

    const intact = await encodedLayers(good);
    for (const [what, bytes, code] of cases) {
      expect(
        codeOf(() => verifyKVObject(bytes)),
        what,
      ).to.equal(code);
      expect(
        codeOf(() => decodeKVObject(bytes)),
        what,
      ).to.equal(code);
      expect(await streamCode(bytes, intact, 1), what).to.equal(code);
    }
  });

  it('bounds lz4: a block claiming a huge decoded size or holding garbage is rejected before or while decompressing', async () => {
    const good = valid('int8+lz4');
    const base = readKVHeader(good);
    const blocks = [0, 1, 2].map((i) => payloadOf(good).subarray(base.layerOffsets[i]!, base.layerOffsets[i + 1]!));
    const rebuild = (layer0: Uint8Array, patch: Partial<KVHeader> = {}): Buffer => {
      const stored = [layer0, blocks[1]!, blocks[2]!];
      const layerChecksums = stored.map((b) => layerDigest(base.version, b));
      const layerOffsets = [0];
      for (const b of stored) layerOffsets.push(layerOffsets[layerOffsets.length - 1]! + b.length);
      const payloadChecksum = createHash('sha256').update(layerChecksums.join(''), 'ascii').digest('hex');
      return hostile({ ...base, layerOffsets, layerChecksums, payloadChecksum, ...patch }, Buffer.concat(stored));
    };
    // Sanity: rebuilding unchanged blocks gives a valid object, so the rejections below are about the damage.
    expect(verifyKVObject(rebuild(blocks[0]!)).layers).to.equal(3);

    const lying = Buffer.from(blocks[0]!);
    lying.writeUInt32LE(0xfffffff0, 0);
    const garbage = Buffer.from(blocks[0]!);
    for (let i = 4; i < garbage.length; i++) garbage[i] = (i * 131) & 0xff;
    const short = compressSync(Buffer.alloc(100));
    const bomb = compressSync(Buffer.alloc(64 << 20));
    const cases: Array<[string, Buffer]> = [
      ['prefix claims 4 GiB', rebuild(lying)],
      ['garbage lz4 body', rebuild(garbage)],
      ['decodes to the wrong size', rebuild(short)],
      // 64 MiB of zeros compresses to ~256 KiB: a tiny-shape header must not let it through.
      ['decompression bomb', rebuild(bomb)],
    ];
    const intact = await encodedLayers(good);
    for (const [what, bytes] of cases) {
      expect(
        codeOf(() => verifyKVObject(bytes)),
        what,
      ).to.equal('KV_CORRUPT');
      expect(await streamCode(bytes, intact, 2), what).to.equal('KV_CORRUPT');
    }
  });

  it('rejects an object for another model, shape or token sequence with KV_MISMATCH', async () => {
    const good = valid('int4+lz4');
    const header = readKVHeader(good);
    const intact = await encodedLayers(good);
    const ok: KVExpectation = { modelFingerprint: 'model-a', layers: 3, kvHeads: 2, headDim: 8, tokens: 37, tokenHash: header.tokenHash };
    expect(verifyKVObject(good, ok).tokens).to.equal(37);
    const wrong: KVExpectation[] = [
      { modelFingerprint: 'model-b' },
      { layers: 4 },
      { kvHeads: 1 },
      { headDim: 16 },
      { tokens: 36 },
      { tokenHash: createHash('sha256').update('other').digest('hex') },
    ];
    for (const w of wrong) {
      const what = JSON.stringify(w);
      expect(
        codeOf(() => verifyKVObject(good, w)),
        what,
      ).to.equal('KV_MISMATCH');
      expect(
        codeOf(() => decodeKVObject(good, w)),
        what,
      ).to.equal('KV_MISMATCH');
      expect(
        codeOf(() => readKVHeader(good, w)),
        what,
      ).to.equal('KV_MISMATCH');
      expect(await streamCode(good, intact, 3, w), what).to.equal('KV_MISMATCH');
    }
  });
});
