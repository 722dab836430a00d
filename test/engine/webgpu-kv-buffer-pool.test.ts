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

    it('hands back a returned buffer of the asked size; when full, drops the longest unused to keep the latest', () => {
      const pool = new KvBufferPool(ctx);
      pool.expect(4096);
      const small = [pool.take(1024, 'a'), pool.take(1024, 'b'), pool.take(1024, 'c'), pool.take(1024, 'd')];
      for (const b of small) pool.give(b);
      expect(pool.take(1024, 'again')).to.equal(small[3]);
      pool.give(small[3]!);
      // A session of another size comes back: its buffers push out the oldest of the old size.
      const large = pool.take(2048, 'large');
      expect(small).to.not.include(large);
      pool.give(large);
      expect(pool.take(2048, 'large again')).to.equal(large);
      expect(pool.take(1024, 'newest left')).to.equal(small[3]);
      expect(pool.take(1024, 'the other kept')).to.equal(small[2]);
      pool.destroy();
    });
  });
});
