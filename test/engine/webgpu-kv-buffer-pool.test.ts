import { expect } from 'chai';
import type { GpuContext } from '../../engine-adapter/webgpu/gpu-context.ts';
import { KvBufferPool, sizeClass } from '../../engine-adapter/webgpu/kv-buffer-pool.ts';
import { openContextOrSkip } from './webgpu-support.ts';

describe('webgpu KV buffer pool', () => {
  it('size classes: 256 at least, then at most 12.5% over, never under, never shrinking', () => {
    expect([1, 256, 257, 8192, 8193, 8256].map(sizeClass)).to.deep.equal([256, 256, 288, 8192, 9216, 9216]);
    let last = 0;
    for (let t = 1; t <= 70_000; t += 7) {
      const c = sizeClass(t);
      expect(c, `class of ${t}`).to.be.at.least(Math.max(t, last));
      if (t > 256) expect(c / t, `class of ${t}`).to.be.at.most(1.125);
      last = c;
    }
  });

  describe('on a device', () => {
    let ctx: GpuContext;
    before(async function () {
      ctx = await openContextOrSkip(this);
    });
    after(() => ctx?.dispose());

    it('ranges of a slot share its blocks at bindable offsets, never overlapping; other slots get their own', () => {
      const pool = new KvBufferPool(ctx);
      const ranges = Array.from({ length: 40 }, () => pool.take(1024, 'layer 0 keys'));
      for (const r of ranges) expect(r.offset % ctx.storageOffsetAlignment, 'offset alignment').to.equal(0);
      const spans = ranges.map((r) => [r.buffer, r.offset, r.offset + r.size] as const);
      for (const [i, a] of spans.entries()) {
        for (const b of spans.slice(i + 1)) {
          if (a[0] === b[0]) expect(a[2] <= b[1] || b[2] <= a[1], 'ranges of one block overlap').to.equal(true);
        }
      }
      // 16 ranges in the first block, as many in the second (as large as what the slot held), 8 in the third.
      expect(new Set(ranges.map((r) => r.buffer)).size, 'blocks for 40 ranges').to.equal(3);
      const other = pool.take(1024, 'layer 0 values');
      expect(ranges.map((r) => r.buffer)).to.not.include(other.buffer);
      pool.destroy();
    });

    it('reuses a given-back range, avoids a named block, and keeps empty blocks only up to the expected cache', () => {
      const pool = new KvBufferPool(ctx);
      pool.expect(1 << 20);
      const a = pool.take(4096, 'slot');
      const b = pool.take(4096, 'slot');
      pool.give(a);
      const again = pool.take(4096, 'slot');
      expect([again.buffer, again.offset]).to.deep.equal([a.buffer, a.offset]);
      const elsewhere = pool.take(4096, 'slot', again.buffer);
      expect(elsewhere.buffer).to.not.equal(again.buffer);
      for (const r of [again, b, elsewhere]) pool.give(r);
      expect(pool.heldBytes, 'emptied blocks within the expected size are kept').to.be.above(0);
      pool.destroy();

      const unexpected = new KvBufferPool(ctx);
      unexpected.give(unexpected.take(4096, 'once'));
      expect(unexpected.heldBytes, 'with nothing expected, an emptied block is destroyed').to.equal(0);
      unexpected.destroy();
    });

    it('keeps for each slot an emptied block its largest range fits, so the next cache of that size allocates nothing', () => {
      const pool = new KvBufferPool(ctx);
      const slots = ['layer 0 keys', 'layer 0 values', 'layer 1 keys', 'layer 1 values'];
      const bytes = 300_000;
      // One cache of four tensors: each tensor's block is several times its range, so the emptied blocks hold more
      // than the expected cache and trimming to it alone would destroy some of them.
      pool.expect(slots.length * bytes);
      const first = slots.map((slot) => pool.take(bytes, slot));
      const held = pool.heldBytes;
      expect(held, 'blocks larger than the cache').to.be.above(slots.length * bytes);
      for (const r of first) pool.give(r);
      expect(pool.heldBytes, 'every slot keeps its block').to.equal(held);
      const second = slots.map((slot) => pool.take(bytes, slot));
      expect(second.map((r) => r.buffer)).to.deep.equal(first.map((r) => r.buffer));
      expect(pool.heldBytes).to.equal(held);
      pool.destroy();
    });
  });
});
