import { createHash } from 'node:crypto';
import { expect } from 'chai';
import { Packr } from 'msgpackr';
import {
  KV_FORMAT_VERSION,
  codecFromString,
  decodeKVObject,
  encodeKVObject,
  readKVHeader,
  readKVObject,
  verifyKVObject,
} from '../../storage/kv-object/index.ts';
import type { KVHeader } from '../../storage/kv-object/types.ts';
import { layerDigest } from '../../storage/kv-object/layer-digest.ts';
import { OFF_THREAD_MIN_BYTES } from '../../storage/kv-object/layer-block.ts';
import { isKdnError } from '../../common/errors.ts';
import { asAsync, chunked, kvTensors, tokenIds } from '../../fixtures/kv-data.ts';

// Large enough that every layer block is hashed on the hash pool's threads when streamed.
const SHAPE = { layers: 3, kvHeads: 4, headDim: 64, tokens: 160 };
const IDS = tokenIds(SHAPE.tokens);

function encode(formatVersion?: 1 | 2): Buffer {
  return encodeKVObject(kvTensors(SHAPE, 4), { modelFingerprint: 'm', tokenIds: IDS, codec: codecFromString('fp16'), formatVersion });
}

function blocks(bytes: Buffer): Buffer[] {
  const header = readKVHeader(bytes);
  const start = bytes.length - header.layerOffsets[header.layers]!;
  return header.layerOffsets.slice(0, -1).map((o, i) => bytes.subarray(start + o, start + header.layerOffsets[i + 1]!));
}

/** The object re-serialized with `header` (the header hash recomputed), its payload unchanged. */
function withHeader(bytes: Buffer, header: KVHeader): Buffer {
  const old = readKVHeader(bytes);
  const body = new Packr({ useRecords: false, moreTypes: false }).pack(header);
  const pre = Buffer.alloc(10);
  pre.write('KDNKV', 0, 'ascii');
  pre[5] = header.version;
  pre.writeUInt32LE(body.length, 6);
  const payload = bytes.subarray(bytes.length - old.layerOffsets[old.layers]!);
  return Buffer.concat([pre, body, createHash('sha256').update(body).digest(), payload]);
}

async function streamed(bytes: Buffer, hashOffThread: boolean): Promise<number> {
  const reader = await readKVObject(asAsync(chunked(bytes, () => 4096)), undefined, { hashOffThread });
  let layers = 0;
  for await (const block of reader.layers) {
    block.decode();
    layers++;
  }
  return layers;
}

async function codeOf(fn: () => unknown): Promise<string> {
  try {
    await fn();
    return 'none';
  } catch (err) {
    if (isKdnError(err)) return err.code;
    throw err;
  }
}

describe('kv-object format versions: version 2 checks layers with BLAKE3, version 1 (sha256) objects stay readable', () => {
  it('layer digests are the published hashes: BLAKE3 test vectors for version 2, sha256 for version 1', () => {
    const abc = Buffer.from('abc');
    expect(layerDigest(2, new Uint8Array(0))).to.equal('af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262');
    expect(layerDigest(2, abc)).to.equal('6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85');
    expect(layerDigest(1, abc)).to.equal('ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad');
  });

  it('writes the current version by default and version 1 on request, each checksummed with its own hash', () => {
    for (const [version, bytes] of [
      [KV_FORMAT_VERSION, encode()],
      [1, encode(1)],
    ] as const) {
      const header = readKVHeader(bytes);
      expect(bytes[5]).to.equal(version);
      expect(header.version).to.equal(version);
      expect(header.layerChecksums).to.deep.equal(blocks(bytes).map((b) => layerDigest(version, b)));
    }
    expect(KV_FORMAT_VERSION).to.equal(2);
  });

  it('both versions decode to the same KV, whole and streamed, with blocks hashed on this thread or the pool', async () => {
    const v1 = encode(1);
    const v2 = encode(2);
    expect(blocks(v1)[0]!.length).to.be.at.least(OFF_THREAD_MIN_BYTES);
    expect(decodeKVObject(v1).tensors).to.deep.equal(decodeKVObject(v2).tensors);
    for (const bytes of [v1, v2]) {
      expect(await streamed(bytes, true)).to.equal(SHAPE.layers);
      expect(await streamed(bytes, false)).to.equal(SHAPE.layers);
    }
  });

  it("a layer's checksum is read with its version's hash: relabelling an object's version fails every layer", async () => {
    for (const [from, to] of [
      [2, 1],
      [1, 2],
    ] as const) {
      const relabelled = withHeader(encode(from), { ...readKVHeader(encode(from)), version: to });
      expect(readKVHeader(relabelled).version).to.equal(to);
      expect(await codeOf(() => verifyKVObject(relabelled))).to.equal('KV_CORRUPT');
      expect(await codeOf(() => streamed(relabelled, true))).to.equal('KV_CORRUPT');
      expect(await codeOf(() => streamed(relabelled, false))).to.equal('KV_CORRUPT');
    }
  });
});
