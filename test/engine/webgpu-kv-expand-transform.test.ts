/**
 * The transform codec's GPU expansion (kernels/kv-expand-transform.ts) against the codec's reference decoder
 * (decodeTransformBlock) on odd shapes: 1, 7, 33 and 150 tokens (more than one workgroup's tile), head sizes 16,
 * 24 and 64, 1 and 3 KV heads, bits from 0 to 16 with zero-bit components inside and past the rank, heads with no
 * bits at all, codes straddling words, several blocks (jobs) per dispatch at other positions and layers.
 */
import { expect } from 'chai';
import type { GpuContext } from '../../engine-adapter/webgpu/gpu-context.ts';
import { GpuTransformTable } from '../../engine-adapter/webgpu/gpu-transform-table.ts';
import { recordKvExpandTransform } from '../../engine-adapter/webgpu/kernels/kv-expand-transform.ts';
import { decodeTransformBlock } from '../../storage/kv-object/codecs/transform-table.ts';
import { randomBlock, testTable } from './transform-fixture.ts';
import { expectClose, openContextOrSkip } from './webgpu-support.ts';

describe('webgpu transform-codec expansion vs the reference decode', () => {
  let ctx: GpuContext;
  before(async function () {
    ctx = await openContextOrSkip(this);
  });
  after(() => ctx?.dispose());

  // Falling bits with a zero-bit hole inside the rank, a 16-bit component, and no bits past 3/4 of the components.
  // Every fourth slot carries no bits at all (rank 0: it decodes to its mean and offsets).
  const falling = (q: number, slot: number, j: number, d: number): number => {
    if (slot % 4 === 3 || j >= Math.floor((3 * d) / 4) - q) return 0;
    if (j === 2) return 0;
    if (j === 0) return 16;
    return Math.max(1, ((slot + j * 5 + q) % 9) + 1 - Math.floor(j / 8));
  };

  for (const [tokens, headDim, kvHeads] of [
    [1, 16, 1],
    [7, 24, 3],
    [33, 64, 3],
    [33, 16, 1],
    [7, 64, 1],
    [150, 24, 1],
  ] as const) {
    it(`${tokens} tokens, ${kvHeads} heads of ${headDim}: two blocks per dispatch at layer 1`, async () => {
      const layers = 2;
      const layer = 1;
      const level = 1;
      const table = testTable({ layers, kvHeads, headDim }, 2, 11 * headDim + kvHeads, (q, slot, j) => falling(q, slot, j, headDim));
      const gpu = new GpuTransformTable(ctx, table);
      const stride = kvHeads * headDim;
      const positions = [3, 3 + tokens + 5];
      const capacity = positions[1]! + tokens + 2;
      const packed = positions.map((_, b) => randomBlock(table, level, layer, tokens, 97 * b + tokens));
      // Blocks start 16-byte aligned in the upload, as the injector stages them.
      const offsets = [0, Math.ceil(packed[0]!.length / 16) * 16];
      const src = new Uint8Array(offsets[1]! + Math.ceil(packed[1]!.length / 16) * 16);
      packed.forEach((p, b) => src.set(p, offsets[b]!));
      const keys = ctx.storage(capacity * stride * 4, 'keys');
      const values = ctx.storage(capacity * stride * 4, 'values');
      const rec = ctx.recorder();
      recordKvExpandTransform(ctx, rec, {
        src: ctx.upload(new Uint32Array(src.buffer), 'blocks'),
        keys,
        values,
        level: gpu.level(level),
        layer,
        tokens,
        kvHeads,
        headDim,
        jobs: positions.map((p, b) => ({ srcOffset: offsets[b]!, dstOffset: p * stride })),
      });
      rec.readback(keys, 0, capacity * stride * 4);
      rec.readback(values, 0, capacity * stride * 4);
      const [k, v] = (await rec.submit()).map((b) => new Float32Array(b));
      packed.forEach((bytes, b) => {
        const want = decodeTransformBlock(table, level, layer, tokens, bytes);
        const at = positions[b]! * stride;
        // Sums of up to 64 products of f32 values near 1 (codes up to 2^16 times steps near 0.01): 1e-3 relative.
        expectClose(k!.subarray(at, at + tokens * stride), want.keys, 1e-3, 1e-3, `block ${b} keys`);
        expectClose(v!.subarray(at, at + tokens * stride), want.values, 1e-3, 1e-3, `block ${b} values`);
      });
      // Rows around the blocks stay untouched.
      expect(Array.from(k!.subarray(0, positions[0]! * stride)).every((x) => x === 0)).to.equal(true);
      expect(Array.from(v!.subarray((positions[0]! + tokens) * stride, positions[1]! * stride)).every((x) => x === 0)).to.equal(true);
      gpu.destroy();
    });
  }
});
