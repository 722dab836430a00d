import { expect } from 'chai';
import { closeSync, mkdtempSync, openSync, renameSync, rmSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isKdnError } from '../../common/errors.ts';
import {
  codecFromString,
  encodeKVObject,
  fileIdentity,
  kvPayloadOffset,
  layerBlockOf,
  pinPath,
  readBlockSource,
  readKVHeader,
  readKVObject,
} from '../../storage/kv-object/index.ts';
import type { KVBlockSource, KVLayerBlock } from '../../storage/kv-object/types.ts';
import { asAsync, kvTensors, tokenIds } from '../../fixtures/kv-data.ts';

const SHAPE = { layers: 3, kvHeads: 2, headDim: 16, tokens: 40 };

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (err) {
    return isKdnError(err) ? err.code : `not a KdnError: ${(err as Error).message}`;
  }
  return undefined;
}

describe('block sources: verified blocks read again from the file they lie in', () => {
  let dir: string;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'kdn-block-source-'));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  /** An int4 object written to `name`, and each layer's source in it. */
  function objectFile(name: string): { path: string; object: Buffer; sources: KVBlockSource[] } {
    const object = encodeKVObject(kvTensors(SHAPE, 3), {
      modelFingerprint: 'source-test',
      tokenIds: tokenIds(SHAPE.tokens),
      codec: codecFromString('int4'),
    });
    const path = join(dir, name);
    writeFileSync(path, object);
    const header = readKVHeader(object);
    const at = kvPayloadOffset(object);
    const identity = fileIdentity(statSync(path));
    const sources = [...Array(SHAPE.layers).keys()].map((l) => ({
      path,
      identity,
      position: at + header.layerOffsets[l]!,
      length: header.layerOffsets[l + 1]! - header.layerOffsets[l]!,
    }));
    return { path, object, sources };
  }

  it('a file block becomes the layer block the object holds, decoding the same', async () => {
    const { object, sources } = objectFile('whole');
    const reader = await readKVObject(asAsync([object]));
    const layers: KVLayerBlock[] = [];
    for await (const block of reader.layers) layers.push(block);
    for (const [l, source] of sources.entries()) {
      const block = layerBlockOf(reader.header, { layer: l, source });
      expect([...block.encoded]).to.deep.equal([...layers[l]!.encoded]);
      expect(block.decode()).to.deep.equal(layers[l]!.decode());
      expect(block.source).to.deep.equal(source);
    }
    // A block with its bytes is left as it is.
    expect(layerBlockOf(reader.header, layers[0]!)).to.equal(layers[0]);
  });

  it('a pinned source is read through its pin after the file was evicted, and through its path when the pin is stale', function () {
    const { path, object, sources } = objectFile('pinned');
    const fd = openSync(path, 'r');
    const pin = pinPath(fd);
    if (pin === undefined) {
      closeSync(fd);
      this.skip();
    }
    const layer1 = object.subarray(sources[1]!.position, sources[1]!.position + sources[1]!.length);
    try {
      // Evicted: the name is gone, the open file still holds the bytes.
      rmSync(path);
      expect(Buffer.from(readBlockSource({ ...sources[1]!, pin }))).to.deep.equal(layer1);
    } finally {
      closeSync(fd);
    }
    expect(codeOf(() => readBlockSource({ ...sources[1]!, pin }))).to.equal('EDGE_UNAVAILABLE');
    // A pin whose descriptor now names another file is passed over for the path.
    const again = objectFile('pinned-again');
    const other = openSync(join(dir, 'whole'), 'r');
    try {
      expect(Buffer.from(readBlockSource({ ...again.sources[1]!, pin: pinPath(other) }))).to.deep.equal(layer1);
    } finally {
      closeSync(other);
    }
  });

  it('a file replaced or removed since is EDGE_UNAVAILABLE (refetch), one cut short KV_CORRUPT', () => {
    const replaced = objectFile('replaced');
    writeFileSync(`${replaced.path}.new`, replaced.object);
    renameSync(`${replaced.path}.new`, replaced.path);
    expect(codeOf(() => readBlockSource(replaced.sources[0]!))).to.equal('EDGE_UNAVAILABLE');

    const removed = objectFile('removed');
    rmSync(removed.path);
    expect(codeOf(() => readBlockSource(removed.sources[0]!))).to.equal('EDGE_UNAVAILABLE');

    const short = objectFile('short');
    truncateSync(short.path, short.sources[2]!.position + 1);
    // The identity names the file as verified: one cut short under it has another size, so another identity...
    expect(codeOf(() => readBlockSource(short.sources[2]!))).to.equal('EDGE_UNAVAILABLE');
    // ...and a source naming its new identity, but bytes past its end, is corrupt.
    const cut = { ...short.sources[2]!, identity: fileIdentity(statSync(short.path)) };
    expect(codeOf(() => readBlockSource(cut))).to.equal('KV_CORRUPT');
  });
});
