/**
 * engine-adapter/webgpu/gpu-keep-warm.ts: work goes to the GPU only while the queue had none for the interval, never
 * more than one tick's at a time, and stopping ends it; a bad interval is refused.
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

  it('submits work while the queue idles, none while other work keeps it busy, and none once stopped', async () => {
    const warm = new GpuKeepWarm(ctx, 40);
    try {
      await sleep(400);
      const idleTicks = warm.ticks;
      expect(idleTicks).to.be.within(1, 400 / 40 + 1);

      // Another submission every 10 ms leaves the queue never idle for 40.
      const x = ctx.storage(1024, 'x');
      const y = ctx.storage(1024, 'y');
      const busyFrom = warm.ticks;
      for (let i = 0; i < 30; i++) {
        const rec = ctx.recorder();
        recordAdd(ctx, rec, { x, y, count: 256 });
        await rec.submit();
        await sleep(10);
      }
      expect(warm.ticks - busyFrom).to.be.at.most(1);
      x.destroy();
      y.destroy();
    } finally {
      warm.stop();
    }
    const stoppedAt = warm.ticks;
    await sleep(200);
    expect(warm.ticks).to.equal(stoppedAt);
  });

  it('refuses an interval that is not a positive whole number of ms', () => {
    for (const bad of [0, -5, 1.5, Number.NaN]) {
      expect(() => new GpuKeepWarm(ctx, bad)).to.throw(/positive whole number/);
    }
  });
});
