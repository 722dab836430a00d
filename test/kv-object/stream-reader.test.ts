import { createReadStream } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { expect } from 'chai';
import { codecFromString, decodeKVObject, encodeKVObject, readKVHeader, readKVObject } from '../../storage/kv-object/index.ts';
import type { KVLayerTensors, KVObjectReader } from '../../storage/kv-object/types.ts';
import { isKdnError } from '../../common/errors.ts';
import { OFF_THREAD_MIN_BYTES } from '../../storage/kv-object/layer-block.ts';
import { asAsync, chunked, kvTensors, rng, tokenIds } from '../../fixtures/kv-data.ts';

const SHAPE = { layers: 4, kvHeads: 2, headDim: 16, tokens: 50 };

function object(codec: string): Buffer {
  return encodeKVObject(kvTensors(SHAPE, 9), { modelFingerprint: 'm', tokenIds: tokenIds(SHAPE.tokens), codec: codecFromString(codec) });
}

async function collect(reader: KVObjectReader): Promise<KVLayerTensors[]> {
  const out: KVLayerTensors[] = [];
  for await (const block of reader.layers) out.push(block.decode());
  return out;
}

function same(a: KVLayerTensors[], b: KVLayerTensors[]): void {
  expect(a).to.have.length(b.length);
  a.forEach((layer, i) => {
    expect(Buffer.from(layer.keys.buffer).equals(Buffer.from(b[i]!.keys.buffer)), `layer ${i} keys`).to.equal(true);
    expect(Buffer.from(layer.values.buffer).equals(Buffer.from(b[i]!.values.buffer)), `layer ${i} values`).to.equal(true);
  });
}

describe('kv-object/stream-reader', () => {
  for (const codec of ['fp16', 'int8+lz4', 'int4']) {
    it(`${codec}: 1-byte chunks, random chunks, one chunk, a Readable and a file stream all give the decode result`, async () => {
      const bytes = object(codec);
      const want = decodeKVObject(bytes).tensors.perLayer;
      const random = rng(5);
      const sources = [
        asAsync(chunked(bytes, () => 1)),
        asAsync(chunked(bytes, () => Math.floor(random() * 2000))),
        asAsync([bytes]),
        Readable.from(chunked(bytes, () => 333)),
      ];
      for (const source of sources) {
        const reader = await readKVObject(source);
        expect(reader.header).to.deep.equal(readKVHeader(bytes));
        same(await collect(reader), want);
      }
      const dir = await mkdtemp(join(tmpdir(), 'kdn-kv-'));
      try {
        await writeFile(join(dir, 'x.kv'), bytes);
        same(await collect(await readKVObject(createReadStream(join(dir, 'x.kv'), { highWaterMark: 97 }))), want);
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
    });
  }

  it('yields layer 0 having pulled no more than the header, that block and one chunk', async () => {
    const bytes = object('fp16');
    const header = readKVHeader(bytes);
    const payloadStart = bytes.length - header.layerOffsets[header.layers]!;
    const chunk = 64;
    let pulled = 0;
    async function* counting(): AsyncGenerator<Uint8Array> {
      for (const c of chunked(bytes, () => chunk)) {
        pulled += c.length;
        yield c;
      }
    }
    const reader = await readKVObject(counting());
    expect(pulled).to.be.at.most(payloadStart + chunk);
    const seen: number[] = [];
    for await (const block of reader.layers) {
      seen.push(pulled);
      expect(pulled, `when layer ${block.layer} was yielded`).to.be.at.most(payloadStart + header.layerOffsets[block.layer + 1]! + chunk);
    }
    expect(seen[0]).to.be.below(bytes.length);
  });

  it('assembles each block that spans chunks in the views receiveInto gives, and reads the same', async () => {
    const bytes = object('fp16');
    const want = decodeKVObject(bytes).tensors.perLayer;
    const views: Uint8Array[] = [];
    const receiveInto = (size: number): Uint8Array => {
      views.push(new Uint8Array(new ArrayBuffer(size + 64), 0, size));
      return views.at(-1)!;
    };
    const reader = await readKVObject(asAsync(chunked(bytes, () => 100)), undefined, { hashOffThread: false, receiveInto });
    const blocks = [];
    for await (const block of reader.layers) blocks.push(block);
    // The header is read into buffers of the reader's own; every layer block is larger than a chunk.
    expect(views).to.have.length(SHAPE.layers);
    blocks.forEach((block, i) => expect(block.encoded, `layer ${i}`).to.equal(views[i]));
    same(
      blocks.map((b) => b.decode()),
      want,
    );
  });

  it('a stream cut mid-object yields only the complete layers, then throws KV_CORRUPT', async () => {
    const bytes = object('int8');
    const header = readKVHeader(bytes);
    const payloadStart = bytes.length - header.layerOffsets[header.layers]!;
    const cut = payloadStart + header.layerOffsets[2]! + 10;
    const want = decodeKVObject(bytes).tensors.perLayer;
    const reader = await readKVObject(asAsync(chunked(bytes.subarray(0, cut), () => 50)));
    const got: KVLayerTensors[] = [];
    let caught: unknown;
    try {
      for await (const block of reader.layers) got.push(block.decode());
    } catch (err) {
      caught = err;
    }
    expect(isKdnError(caught, 'KV_CORRUPT'), String(caught)).to.equal(true);
    same(got, want.slice(0, 2));
  });

  it('a stream cut inside the header rejects the reader itself with KV_CORRUPT', async () => {
    const bytes = object('int4');
    for (const cut of [0, 3, 10, 40]) {
      let caught: unknown;
      try {
        await readKVObject(asAsync([bytes.subarray(0, cut)]));
      } catch (err) {
        caught = err;
      }
      expect(isKdnError(caught, 'KV_CORRUPT'), `cut ${cut}: ${String(caught)}`).to.equal(true);
    }
  });

  it('a consumer that stops early closes the source', async () => {
    const bytes = object('fp16');
    let closed = false;
    async function* source(): AsyncGenerator<Uint8Array> {
      try {
        yield* chunked(bytes, () => 100);
      } finally {
        closed = true;
      }
    }
    const reader = await readKVObject(source());
    for await (const block of reader.layers) if (block.layer === 0) break;
    expect(closed).to.equal(true);
  });

  it('rejects a stream of strings with INVALID_ARGUMENT', async () => {
    let caught: unknown;
    try {
      await readKVObject(Readable.from(['KDNKV'], { objectMode: true }));
    } catch (err) {
      caught = err;
    }
    expect(isKdnError(caught, 'INVALID_ARGUMENT'), String(caught)).to.equal(true);
  });

  // Layer blocks this large are hashed on a worker thread (OFF_THREAD_MIN_BYTES): the same checks must hold there.
  describe('layer blocks hashed off the event loop', () => {
    const BIG = { layers: 3, kvHeads: 4, headDim: 64, tokens: 160 };
    const big = (codec: string): Buffer =>
      encodeKVObject(kvTensors(BIG, 3), { modelFingerprint: 'm', tokenIds: tokenIds(BIG.tokens), codec: codecFromString(codec) });

    for (const codec of ['fp16', 'int8+lz4']) {
      it(`${codec}: streamed in 64 KiB chunks, gives the decode result`, async () => {
        const bytes = big(codec);
        const header = readKVHeader(bytes);
        expect(header.layerOffsets[1]! - header.layerOffsets[0]!).to.be.at.least(OFF_THREAD_MIN_BYTES);
        same(await collect(await readKVObject(Readable.from(chunked(bytes, () => 65_536)))), decodeKVObject(bytes).tensors.perLayer);
      });
    }

    it('chunks that are exactly whole layer blocks (each its own buffer, moved to the hash worker) read intact', async () => {
      const bytes = big('fp16');
      const header = readKVHeader(bytes);
      const start = bytes.length - header.layerOffsets[header.layers]!;
      // The header alone, then every block as a chunk owning its whole ArrayBuffer: the reader hands each block on as
      // it came, the hash pool detaches its buffer, and nothing may still point into it.
      const chunks = [Uint8Array.from(bytes.subarray(0, start))];
      for (let l = 0; l < header.layers; l++)
        chunks.push(Uint8Array.from(bytes.subarray(start + header.layerOffsets[l]!, start + header.layerOffsets[l + 1]!)));
      same(await collect(await readKVObject(asAsync(chunks))), decodeKVObject(bytes).tensors.perLayer);
    });

    it('a flipped byte in layer 1 yields layer 0, then KV_CORRUPT, never layer 1', async () => {
      const bytes = big('fp16');
      const header = readKVHeader(bytes);
      const payloadStart = bytes.length - header.layerOffsets[header.layers]!;
      bytes[payloadStart + header.layerOffsets[1]! + 1000]! ^= 0x40;
      const reader = await readKVObject(Readable.from(chunked(bytes, () => 65_536)));
      const seen: number[] = [];
      let caught: unknown;
      try {
        for await (const block of reader.layers) seen.push(block.layer);
      } catch (err) {
        caught = err;
      }
      expect(seen).to.deep.equal([0]);
      expect(isKdnError(caught, 'KV_CORRUPT'), String(caught)).to.equal(true);
    });
  });
});
