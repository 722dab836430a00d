/**
 * Pacing of the `webgpu` package's polls (engine-adapter/webgpu/dawn-poll-pacing.ts): a device opened on this thread
 * installs it; a long GPU wait then polls on timers once its first milliseconds have passed instead of spinning on
 * every turn of the event loop, a quick answer never waits for a timer, and every answer still comes (error scopes,
 * maps, work done). JavaScript callers of setImmediate are not touched.
 */
import { expect } from 'chai';
import { promisify } from 'node:util';
import { paceDawnPolling } from '../../engine-adapter/webgpu/dawn-poll-pacing.ts';
import type { GpuContext } from '../../engine-adapter/webgpu/gpu-context.ts';
import { openContextOrSkip } from './webgpu-support.ts';

const COPY_SRC = 0x4;
const COPY_DST = 0x8;
const MAP_READ = 0x1;

describe('dawn poll pacing', () => {
  let ctx: GpuContext;
  before(async function () {
    ctx = await openContextOrSkip(this);
  });
  after(() => ctx?.dispose());

  it('polls a long GPU wait on timers after its first milliseconds, never a quick answer, and every answer comes', async () => {
    const { device } = ctx;
    const counts = paceDawnPolling();
    const bytes = 32 * 2 ** 20;
    const a = device.createBuffer({ size: bytes, usage: COPY_SRC | COPY_DST });
    const b = device.createBuffer({ size: bytes, usage: COPY_SRC | COPY_DST });
    const read = device.createBuffer({ size: 16, usage: MAP_READ | COPY_DST });
    try {
      // Copies long enough that the wait spans many turns of the event loop on any adapter.
      let waited = 0;
      let rounds = 0;
      const before = { ...counts };
      while (waited < 50) {
        const encoder = device.createCommandEncoder();
        for (let i = 0; i < 16; i++) encoder.copyBufferToBuffer(i % 2 ? b : a, 0, i % 2 ? a : b, 0, bytes);
        encoder.copyBufferToBuffer(a, 0, read, 0, 16);
        device.queue.submit([encoder.finish()]);
        device.pushErrorScope('validation');
        const began = performance.now();
        expect(await device.popErrorScope()).to.equal(null);
        await read.mapAsync(MAP_READ);
        expect(read.getMappedRange().byteLength).to.equal(16);
        read.unmap();
        await device.queue.onSubmittedWorkDone();
        waited += performance.now() - began;
        rounds++;
      }
      const immediate = counts.immediate - before.immediate;
      const paced = counts.paced - before.paced;
      expect(paced, `${immediate} immediate polls over ${waited.toFixed(0)} ms in ${rounds} rounds`).to.be.greaterThan(0);
      // Nothing pending on the GPU: the popped scope answers on the next turns, without a timer.
      await device.queue.onSubmittedWorkDone();
      const idle = counts.paced;
      device.pushErrorScope('validation');
      expect(await device.popErrorScope()).to.equal(null);
      expect(counts.paced, 'polls on timers for a quick answer').to.equal(idle);
    } finally {
      a.destroy();
      b.destroy();
      read.destroy();
    }
  });

  it('leaves JavaScript callers of setImmediate as they were', async () => {
    const counts = paceDawnPolling();
    const before = { ...counts };
    const order: string[] = [];
    const handle = setImmediate((x: string) => order.push(x), 'immediate');
    expect(handle.constructor.name).to.equal('Immediate');
    await promisify(setImmediate)();
    expect(order).to.deep.equal(['immediate']);
    // A JavaScript callback that sets up its own next turn, as the package's polls do, is never paced.
    const chained: number[] = [];
    await new Promise<void>((resolve) => {
      const step = (n: number): void => {
        chained.push(n);
        if (n < 20) setImmediate(step, n + 1);
        else resolve();
      };
      setImmediate(step, 0);
    });
    expect(chained).to.have.length(21);
    expect(counts).to.deep.equal(before);
  });
});
