/**
 * engine-adapter/webgpu/gpu-keep-warm.ts: work goes to the GPU while the queue idles, none while other work keeps it
 * busy, again once it idles, none once stopped; an interval under 10 ms or not whole is refused.
 */
import { expect } from 'chai';
import { setTimeout as sleep } from 'node:timers/promises';
import type { GpuContext } from '../../engine-adapter/webgpu/gpu-context.ts';
import { GpuKeepWarm } from '../../engine-adapter/webgpu/gpu-keep-warm.ts';
import { recordAdd } from '../../engine-adapter/webgpu/kernels/add.ts';
import { openContextOrSkip } from './webgpu-support.ts';

describe('GpuKeepWarm', function () {
  this.timeout(60_000);
  let ctx: GpuContext;
  before(async function () {
    ctx = await openContextOrSkip(this);
  });
  after(async () => ctx?.dispose());

  it('submits work while the queue idles', async () => {
    const warm = new GpuKeepWarm(ctx, 40);
    try {
      await sleep(400);
      expect(warm.ticks).to.be.within(1, 400 / 40 + 1);
    } finally {
      warm.stop();
    }
  });

  it('submits none while other work keeps the queue busy, resumes once it idles, and none once stopped', async () => {
    const x = ctx.storage(1024, 'x');
    const y = ctx.storage(1024, 'y');
    const warm = new GpuKeepWarm(ctx, 300);
    try {
      // A submission every 10 ms (not waiting for the GPU) leaves the queue never idle for 300.
      for (let i = 0; i < 40; i++) {
        const rec = ctx.recorder();
        recordAdd(ctx, rec, { x, y, count: 256 });
        void rec.submit();
        await sleep(10);
      }
      expect(warm.ticks).to.equal(0);
      await sleep(900);
      expect(warm.ticks).to.be.at.least(1);
    } finally {
      warm.stop();
      x.destroy();
      y.destroy();
    }
    const stoppedAt = warm.ticks;
    await sleep(400);
    expect(warm.ticks).to.equal(stoppedAt);
  });

  it('refuses an interval that is not a whole number of ms from 10', () => {
    for (const bad of [0, 5, -5, 10.5, Number.NaN]) {
      expect(() => new GpuKeepWarm(ctx, bad)).to.throw(/whole number of ms from 10/);
    }
  });
});
