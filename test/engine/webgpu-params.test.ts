/**
 * A dispatch's uniform parameters as the WGSL struct reads them: u32, i32 and f32 as their 32-bit patterns in
 * declaration order, a vec4<u32> at its 16-byte alignment; a Recorder gives a dispatch up to four 256-byte slots of
 * them and refuses more.
 */
import { expect } from 'chai';
import { KdnError } from '../../common/errors.ts';
import { Params, type GpuContext } from '../../engine-adapter/webgpu/gpu-context.ts';
import { recordAdd } from '../../engine-adapter/webgpu/kernels/add.ts';
import { openContextOrSkip } from './webgpu-support.ts';

describe('webgpu uniform parameters', () => {
  it('keeps each scalar as the bits the struct reads and aligns a vec4 to 16 bytes', () => {
    const p = new Params()
      .u32(7)
      .i32(-3)
      .f32(1.5)
      .vec4u(1, 2, 3, 0xffffffff)
      .u32(2 ** 32 + 5);
    const bytes = new DataView(new Uint32Array(p.words).buffer);
    expect(p.words).to.have.length(9);
    expect(bytes.getUint32(0, true)).to.equal(7);
    expect(bytes.getInt32(4, true)).to.equal(-3);
    expect(bytes.getFloat32(8, true)).to.equal(1.5);
    expect(bytes.getUint32(12, true), 'padding before the vec4').to.equal(0);
    expect([16, 20, 24, 28].map((at) => bytes.getUint32(at, true))).to.deep.equal([1, 2, 3, 0xffffffff]);
    expect(bytes.getUint32(32, true), 'wrapped to 32 bits').to.equal(5);
  });

  describe('in a Recorder', () => {
    let ctx: GpuContext;
    before(async function () {
      ctx = await openContextOrSkip(this);
    });
    after(() => ctx?.dispose());

    it('refuses parameters larger than four uniform slots', () => {
      const x = ctx.upload(new Float32Array(4), 'x');
      const rec = ctx.recorder();
      const big = new Params();
      for (let i = 0; i < 257; i++) big.u32(i);
      expect(() =>
        rec.dispatch(ctx.pipeline({ url: new URL('../../engine-adapter/webgpu/kernels/add.wgsl', import.meta.url) }), big, [x, x], [1]),
      ).to.throw(KdnError, /1028 bytes exceed a dispatch's 1024 bytes/);
      recordAdd(ctx, rec, { x, y: x, count: 4 });
      expect(rec.counts().dispatches).to.equal(1);
    });
  });
});
