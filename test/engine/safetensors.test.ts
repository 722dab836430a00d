import { expect } from 'chai';
import { copyFile, mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { SafetensorsModel, decodeToFloat32, readSafetensorsHeader } from '../../engine-adapter/model/safetensors.ts';
import { floatToBf16Bits, writeSafetensors } from '../../engine-adapter/model/safetensors-write.ts';
import { TempModels } from './temp-models.ts';
import { rejection } from '../support/rejection.ts';

/** Hand-built file: 8-byte length, header bytes, data bytes. */
function rawFile(header: string, data: Uint8Array = new Uint8Array(0), declaredLength?: bigint): Buffer {
  const h = Buffer.from(header, 'utf8');
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(declaredLength ?? BigInt(h.length));
  return Buffer.concat([len, h, data]);
}

describe('engine safetensors', () => {
  const models = new TempModels();
  after(() => models.cleanup());

  const values = Float32Array.from([0, 1, -2, 0.5, 65504, 1e-6, -Math.PI, 123.456, 1 / 3, -1e-8]);

  async function roundTrip(dtype: 'F32' | 'F16' | 'BF16'): Promise<Float32Array> {
    const path = join(await models.dir(), `t-${dtype}.safetensors`);
    await writeSafetensors(path, [
      { name: 'a', dtype, shape: [2, 5], data: values },
      { name: 'b', dtype, shape: [], data: Float32Array.from([7]) },
    ]);
    const [a, b] = await readSafetensorsHeader(path);
    expect(a).to.include({ name: 'a', dtype });
    expect(a!.shape).to.deep.equal([2, 5]);
    expect(b!.shape).to.deep.equal([]);
    const files = await openSingle(path);
    try {
      expect([...(await files.readFloat32(files.entry('b')!))]).to.deep.equal([7]);
      return await files.readFloat32(files.entry('a')!);
    } finally {
      await files.close();
    }
  }

  let singles = 0;
  /** SafetensorsModel reads model directories; put the file where it expects it. */
  async function openSingle(path: string): Promise<SafetensorsModel> {
    const dir = join(await models.dir(), `single-${++singles}`);
    await mkdir(dir);
    await copyFile(path, join(dir, 'model.safetensors'));
    return SafetensorsModel.open(dir);
  }

  it('F32 reads back exactly', async () => {
    expect([...(await roundTrip('F32'))]).to.deep.equal([...values]);
  });

  it('BF16 reads back as the nearest bfloat16 (round to nearest even)', async () => {
    const got = await roundTrip('BF16');
    const u = new Uint32Array(1);
    const f = new Float32Array(u.buffer);
    values.forEach((v, i) => {
      u[0] = floatToBf16Bits(v) << 16;
      expect(got[i]).to.equal(f[0]);
      expect(Math.abs(got[i]! - v)).to.be.at.most(Math.abs(v) * 2 ** -8);
    });
  });

  it('F16 reads back within half precision, subnormals and the largest half included', async () => {
    const got = await roundTrip('F16');
    expect(got[4]).to.equal(65504);
    expect(got[3]).to.equal(0.5);
    values.forEach((v, i) => expect(Math.abs(got[i]! - v)).to.be.at.most(Math.max(Math.abs(v) * 2 ** -11, 2 ** -25)));
    expect(got[5]).to.be.greaterThan(0); // 1e-6 is a half subnormal, not zero
  });

  it('decodes F16 and BF16 from a Buffer at an odd offset (copied to align, not viewed)', () => {
    const raw = Buffer.alloc(1 + 4);
    raw.writeUInt16LE(0x3c00, 1); // f16 1.0
    raw.writeUInt16LE(0xc000, 3); // f16 -2.0
    const out = new Float32Array(2);
    decodeToFloat32('F16', raw.subarray(1), out, 0);
    expect([...out]).to.deep.equal([1, -2]);
    raw.writeUInt16LE(0x3f80, 1); // bf16 1.0
    decodeToFloat32('BF16', raw.subarray(1, 3), out, 1);
    expect(out[1]).to.equal(1);
  });

  it('reads a sharded model through its index with the same tensors as a single file', async () => {
    const single = await models.make({ architecture: 'Qwen2ForCausalLM', dtype: 'bf16', seed: 5 });
    const sharded = await models.make({ architecture: 'Qwen2ForCausalLM', dtype: 'bf16', seed: 5, shards: 3 });
    const a = await SafetensorsModel.open(single.dir);
    const b = await SafetensorsModel.open(sharded.dir);
    try {
      expect(b.names()).to.deep.equal(a.names());
      expect(new Set([...b.tensors.values()].map((e) => e.file)).size).to.equal(3);
      for (const name of ['model.embed_tokens.weight', 'model.layers.1.self_attn.k_proj.bias']) {
        expect([...(await b.readFloat32(b.entry(name)!))]).to.deep.equal([...(await a.readFloat32(a.entry(name)!))]);
      }
    } finally {
      await a.close();
      await b.close();
    }
  });

  it('an index naming a missing shard, or one outside the directory, is MODEL_INVALID', async () => {
    const m = await models.make({ architecture: 'LlamaForCausalLM', shards: 2 });
    const index = join(m.dir, 'model.safetensors.index.json');
    await writeFile(index, JSON.stringify({ weight_map: { 'model.norm.weight': 'gone.safetensors' } }));
    const e = await rejection(SafetensorsModel.open(m.dir));
    expect(e.code).to.equal('MODEL_INVALID');
    expect(e.message).to.contain(join(m.dir, 'gone.safetensors'));
    await writeFile(index, JSON.stringify({ weight_map: { x: '../x.safetensors' } }));
    expect((await rejection(SafetensorsModel.open(m.dir))).code).to.equal('MODEL_INVALID');
  });

  it('a directory without safetensors is MODEL_INVALID naming model.safetensors', async () => {
    const e = await rejection(SafetensorsModel.open(join(await models.dir(), 'empty')));
    expect(e.code).to.equal('MODEL_INVALID');
    expect(e.message).to.contain('model.safetensors');
  });

  const hostile: [string, Buffer, string][] = [
    ['shorter than the length prefix', Buffer.from([1, 2, 3]), 'MODEL_INVALID'],
    ['a header length of 2^63', rawFile('{}', undefined, 2n ** 63n), 'MODEL_INVALID'],
    ['a header length past the end', rawFile('{}', undefined, 1000n), 'MODEL_INVALID'],
    ['a header that is not JSON', rawFile('{"a":'), 'MODEL_INVALID'],
    [
      'a header that is not UTF-8',
      Buffer.concat([rawFile('{"a":1}').subarray(0, 9), Buffer.from([0xff, 0xfe, 0x7d, 0x20, 0x20, 0x20])]),
      'MODEL_INVALID',
    ],
    ['a header that is an array', rawFile('[]'), 'MODEL_INVALID'],
    ['offsets past the data', rawFile('{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}', new Uint8Array(8)), 'MODEL_INVALID'],
    [
      'offsets that disagree with the shape',
      rawFile('{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,8]}}', new Uint8Array(16)),
      'MODEL_INVALID',
    ],
    ['reversed offsets', rawFile('{"w":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}}', new Uint8Array(16)), 'MODEL_INVALID'],
    ['a negative dimension', rawFile('{"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,0]}}'), 'MODEL_INVALID'],
    ['a huge shape', rawFile('{"w":{"dtype":"F32","shape":[1e300,1e300],"data_offsets":[0,8]}}', new Uint8Array(8)), 'MODEL_INVALID'],
    ['an entry that is not an object', rawFile('{"w":5}'), 'MODEL_INVALID'],
    ['an unsupported dtype', rawFile('{"w":{"dtype":"I64","shape":[1],"data_offsets":[0,8]}}', new Uint8Array(8)), 'MODEL_UNSUPPORTED'],
  ];
  for (const [what, bytes, code] of hostile) {
    it(`a file with ${what} is ${code}, not a crash`, async () => {
      const path = join(await models.dir(), 'hostile.safetensors');
      await writeFile(path, bytes);
      const e = await rejection(readSafetensorsHeader(path));
      expect(e.code).to.equal(code);
      expect(e.message).to.contain(path);
    });
  }
});
