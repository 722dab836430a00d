import { createHash } from 'node:crypto';
import { expect } from 'chai';
import { Packr } from 'msgpackr';
import {
  KV_FORMAT_VERSION,
  decodeKVObject,
  encodeKVObject,
  fitTransformTable,
  parseTransformTable,
  readKVHeader,
  readKVObject,
  transformTables,
  verifyKVObject,
  type TransformTable,
} from '../../storage/kv-object/index.ts';
import type { KVTensors } from '../../storage/kv-object/types.ts';
import { isKdnError, type ErrorCode } from '../../common/errors.ts';
import { asAsync, chunked, gaussian, rng, tokenIds } from '../../fixtures/kv-data.ts';

const SHAPE = { layers: 2, kvHeads: 2, headDim: 16, tokens: 21 };
const REJECT: ErrorCode[] = ['KV_CORRUPT', 'KV_MISMATCH', 'KV_UNSUPPORTED'];

function sample(tokens: number, seed: number): KVTensors {
  const normal = gaussian(rng(seed));
  const n = tokens * SHAPE.kvHeads * SHAPE.headDim;
  const perLayer = Array.from({ length: SHAPE.layers }, () => ({
    keys: Float32Array.from({ length: n }, (_, i) => normal() * (1 + (i % SHAPE.headDim))),
    values: Float32Array.from({ length: n }, () => normal()),
  }));
  return { ...SHAPE, tokens, positionBase: 1, ropeApplied: false, perLayer };
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

async function streamCode(bytes: Uint8Array): Promise<ErrorCode | 'none'> {
  const random = rng(bytes.length);
  try {
    const reader = await readKVObject(asAsync(chunked(bytes, () => Math.floor(random() * 200))));
    for await (const block of reader.layers) block.decode();
  } catch (err) {
    if (isKdnError(err)) return err.code;
    throw err;
  }
  return 'none';
}

/** Recomputes a table's trailing checksum, so a hostile table passes the hash and must be caught by validation. */
function reseal(bytes: Uint8Array): Buffer {
  const out = Buffer.from(bytes);
  createHash('sha256')
    .update(out.subarray(0, out.length - 32))
    .digest()
    .copy(out, out.length - 32);
  return out;
}

/** Byte offsets in a serialized table (see transform-table.ts): the level heads and the arrays after them. */
function tableOffsets(table: TransformTable) {
  const fp = Buffer.byteLength(table.modelFingerprint);
  const levelHeads = 28 + ((fp + 3) & ~3);
  const perSlot = table.layers * 2 * table.kvHeads * table.headDim;
  const mean = levelHeads + 16 * table.levels.length;
  const basis = mean + 4 * perSlot;
  const level0 = basis + 4 * perSlot * table.headDim;
  const bits0 = level0;
  const step0 = bits0 + ((perSlot + 3) & ~3);
  return { levelHeads, mean, basis, bits0, step0, perSlot };
}

function hostileObject(header: unknown, payload: Uint8Array): Buffer {
  const body = new Packr({ useRecords: false }).pack(header);
  const pre = Buffer.alloc(10);
  pre.write('KDNKV', 0, 'ascii');
  pre[5] = KV_FORMAT_VERSION;
  pre.writeUInt32LE(body.length, 6);
  return Buffer.concat([pre, body, createHash('sha256').update(body).digest(), payload]);
}

describe('kv-object/transform corruption: damaged tables and objects are rejected, never decoded into garbage', () => {
  let table: TransformTable;
  let good: Buffer;

  before(() => {
    table = transformTables.register(fitTransformTable([sample(200, 1)], 'model-a'));
    good = encodeKVObject(sample(SHAPE.tokens, 2), {
      modelFingerprint: 'model-a',
      tokenIds: tokenIds(SHAPE.tokens),
      codec: { name: 'transform', lz4: false, table: table.hash, level: 2 },
    });
  });

  it('table: every flipped byte, truncation and appended byte is rejected', () => {
    expect(parseTransformTable(table.bytes).hash).to.equal(table.hash);
    const random = rng(9);
    for (let k = 0; k < 300; k++) {
      const bad = Buffer.from(table.bytes);
      const at = Math.floor(random() * bad.length);
      bad[at]! ^= 1 + Math.floor(random() * 255);
      const code = codeOf(() => parseTransformTable(bad));
      expect(at === 5 ? ['KV_UNSUPPORTED', 'KV_CORRUPT'] : ['KV_CORRUPT'], `flip at ${at}`).to.include(code);
    }
    for (let k = 0; k < 100; k++) {
      const cut = Math.floor(random() * table.bytes.length);
      expect(
        codeOf(() => parseTransformTable(table.bytes.subarray(0, cut))),
        `cut at ${cut}`,
      ).to.equal('KV_CORRUPT');
    }
    expect(codeOf(() => parseTransformTable(Buffer.concat([table.bytes, Buffer.from([0])])))).to.equal('KV_CORRUPT');
    expect(codeOf(() => parseTransformTable(new Uint8Array(0)))).to.equal('KV_CORRUPT');
  });

  it('table: hostile contents with a valid checksum are rejected before anything is allocated by them', () => {
    const o = tableOffsets(table);
    const patch = (fn: (b: Buffer) => void): Buffer => {
      const b = Buffer.from(table.bytes);
      fn(b);
      return reseal(b);
    };
    const cases: Array<[string, Buffer, ErrorCode]> = [
      ['bad magic', patch((b) => b.write('KDNXX', 0, 'ascii')), 'KV_CORRUPT'],
      ['version 2', patch((b) => (b[5] = 2)), 'KV_UNSUPPORTED'],
      ['reserved bytes set', patch((b) => b.writeUInt16LE(7, 6)), 'KV_CORRUPT'],
      ['zero layers', patch((b) => b.writeUInt32LE(0, 8)), 'KV_CORRUPT'],
      ['2^31 layers', patch((b) => b.writeUInt32LE(2 ** 31, 8)), 'KV_CORRUPT'],
      ['headDim over the cap', patch((b) => b.writeUInt32LE(513, 16)), 'KV_CORRUPT'],
      [
        'dimensions within caps, product over the size cap',
        patch((b) => {
          b.writeUInt32LE(1024, 8);
          b.writeUInt32LE(1024, 12);
          b.writeUInt32LE(512, 16);
        }),
        'KV_CORRUPT',
      ],
      ['17 levels', patch((b) => b.writeUInt32LE(17, 20)), 'KV_CORRUPT'],
      ['fingerprint length 10^6', patch((b) => b.writeUInt32LE(1e6, 24)), 'KV_CORRUPT'],
      ['length claims one more layer', patch((b) => b.writeUInt32LE(table.layers + 1, 8)), 'KV_CORRUPT'],
      ['bits 17', patch((b) => (b[o.bits0 + 3] = 17)), 'KV_CORRUPT'],
      ['bits 255', patch((b) => (b[o.bits0] = 255)), 'KV_CORRUPT'],
      ['NaN step', patch((b) => b.writeFloatLE(NaN, o.step0)), 'KV_CORRUPT'],
      ['infinite mean', patch((b) => b.writeFloatLE(Infinity, o.mean + 8)), 'KV_CORRUPT'],
      ['NaN basis entry', patch((b) => b.writeFloatLE(NaN, o.basis + 40)), 'KV_CORRUPT'],
      ['level name with capitals', patch((b) => b.write('X8', o.levelHeads, 'ascii')), 'KV_CORRUPT'],
      ['level name not zero padded', patch((b) => (b[o.levelHeads + 11] = 0x41)), 'KV_CORRUPT'],
      ['NaN target bits', patch((b) => b.writeFloatLE(NaN, o.levelHeads + 12)), 'KV_CORRUPT'],
      ['fingerprint not UTF-8', patch((b) => (b[28] = 0xff)), 'KV_CORRUPT'],
    ];
    // A coded component whose step is 0 or negative would decode every code to one value.
    const coded = table.levels[0]!.bits.findIndex((b) => b > 0);
    cases.push(['zero step of a coded component', patch((b) => b.writeFloatLE(0, o.step0 + 4 * coded)), 'KV_CORRUPT']);
    cases.push(['negative step of a coded component', patch((b) => b.writeFloatLE(-1, o.step0 + 4 * coded)), 'KV_CORRUPT']);
    for (const [what, bytes, code] of cases)
      expect(
        codeOf(() => parseTransformTable(bytes)),
        what,
      ).to.equal(code);
  });

  it('objects: flips and truncations are rejected by every reader', async () => {
    expect(decodeKVObject(good).tensors.tokens).to.equal(SHAPE.tokens);
    const random = rng(77);
    for (let k = 0; k < 200; k++) {
      const bad = Buffer.from(good);
      const at = Math.floor(random() * bad.length);
      bad[at]! ^= 1 + Math.floor(random() * 255);
      for (const code of [codeOf(() => verifyKVObject(bad)), codeOf(() => decodeKVObject(bad)), await streamCode(bad)]) {
        expect(REJECT, `flip at ${at}: ${code}`).to.include(code);
      }
    }
    for (let k = 0; k < 60; k++) {
      const cut = Math.floor(random() * good.length);
      const bad = good.subarray(0, cut);
      expect(REJECT, `cut at ${cut}`).to.include(codeOf(() => decodeKVObject(bad)));
      expect(REJECT, `stream cut at ${cut}`).to.include(await streamCode(bad));
    }
  });

  it('objects: hostile transform headers with valid hashes are rejected', async () => {
    const base = readKVHeader(good);
    const payload = good.subarray(good.length - base.layerOffsets[base.layers]!);
    const other = transformTables.register(fitTransformTable([sample(200, 3)], 'model-b'));
    const codec = (patch: Record<string, unknown>) => ({ ...base, codec: { ...base.codec, ...patch } });
    const cases: Array<[string, unknown, ErrorCode]> = [
      ['level past the table', codec({ level: 9 }), 'KV_UNSUPPORTED'],
      ['level over any table', codec({ level: 99 }), 'KV_UNSUPPORTED'],
      ['negative level', codec({ level: -1 }), 'KV_UNSUPPORTED'],
      ['level as a string', codec({ level: '2' }), 'KV_CORRUPT'],
      ['table not hex', codec({ table: 'Z'.repeat(64) }), 'KV_UNSUPPORTED'],
      ['no table', { ...base, codec: { name: 'transform', lz4: false, level: 2 } }, 'KV_UNSUPPORTED'],
      ['lz4 framing', codec({ lz4: true }), 'KV_UNSUPPORTED'],
      ['a groupSize field', codec({ groupSize: 32 }), 'KV_CORRUPT'],
      ['keys said to be after RoPE', { ...base, ropeApplied: true }, 'KV_CORRUPT'],
      ['table of another model', codec({ table: other.hash }), 'KV_MISMATCH'],
      ['another kvHeads than the table', { ...base, kvHeads: 1 }, 'KV_MISMATCH'],
      ["block sizes not the table's", { ...base, layerOffsets: [0, 8, 16] }, 'KV_CORRUPT'],
      ['tokens past the payload (decode bomb)', { ...base, tokens: 1 << 20, headDim: 16, kvHeads: 2 }, 'KV_CORRUPT'],
    ];
    for (const [what, header, code] of cases) {
      const bytes = hostileObject(header, payload);
      expect(
        codeOf(() => verifyKVObject(bytes)),
        what,
      ).to.equal(code);
      expect(
        codeOf(() => decodeKVObject(bytes)),
        what,
      ).to.equal(code);
      expect(await streamCode(bytes), what).to.equal(code);
    }
  });

  it('objects of an unknown table: verified by checksum without it, never decoded', async () => {
    const unknown = hostileObject(
      { ...readKVHeader(good), codec: { name: 'transform', lz4: false, table: 'ab'.repeat(32), level: 2 } },
      good.subarray(good.length - readKVHeader(good).layerOffsets[SHAPE.layers]!),
    );
    expect(verifyKVObject(unknown).codec.table).to.equal('ab'.repeat(32));
    expect(codeOf(() => decodeKVObject(unknown))).to.equal('KV_UNSUPPORTED');
    expect(await streamCode(unknown)).to.equal('KV_UNSUPPORTED');
    // Without its table a block may not claim more than the widest transform block (16 bits per element).
    const base = readKVHeader(unknown);
    const huge = hostileObject({ ...base, layerOffsets: [0, 2 ** 40, 2 ** 41] }, new Uint8Array(0));
    expect(codeOf(() => verifyKVObject(huge))).to.equal('KV_CORRUPT');
  });
});
