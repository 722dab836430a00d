/**
 * The Recorder: long recordings (submitted in segments, over a grown uniform buffer, with bind groups reused from
 * earlier recordings) run every dispatch in order; the timed mode (kernel profiling) gives each dispatch's GPU time
 * under its kernel's name, and the same results and readbacks as an untimed Recorder. One bind group serves a
 * kernel's buffers from every uniform slot. A submission without readbacks asks Dawn when the GPU is done only once
 * awaited: a pending answer keeps Dawn polling the event loop.
 */
import { expect } from 'chai';
import { KdnError } from '../../common/errors.ts';
import type { GpuContext } from '../../engine-adapter/webgpu/gpu-context.ts';
import { recordAdd } from '../../engine-adapter/webgpu/kernels/add.ts';
import { recordKvDequantFp16 } from '../../engine-adapter/webgpu/kernels/kv-dequant-fp16.ts';
import { recordSwiglu } from '../../engine-adapter/webgpu/kernels/swiglu.ts';
import { openContextOrSkip, randomArray } from './webgpu-support.ts';

describe('webgpu recorder', () => {
  let ctx: GpuContext;
  before(async function () {
    ctx = await openContextOrSkip(this);
  });
  after(() => ctx?.dispose());

  /** x + y, then silu(gate) * up, each through one recorder; returns both results. */
  const runBoth = async (timed: boolean) => {
    const count = 1000;
    const x = ctx.upload(randomArray(count, 1), 'x');
    const y = ctx.upload(randomArray(count, 2), 'y');
    const gate = ctx.upload(randomArray(count, 3), 'gate');
    const up = ctx.upload(randomArray(count, 4), 'up');
    const rec = ctx.recorder({ timed });
    recordAdd(ctx, rec, { x, y, count });
    recordSwiglu(ctx, rec, { gate, up, count });
    rec.readback(x, 0, count * 4);
    rec.readback(gate, 0, count * 4);
    const out = await rec.submit();
    return { rec, out: out.map((b) => new Float32Array(b)) };
  };

  it('asks when a submission without readbacks is done only once it is awaited, and then resolves with none', async () => {
    const queue = ctx.device.queue;
    const ask = queue.onSubmittedWorkDone.bind(queue);
    let asked = 0;
    queue.onSubmittedWorkDone = () => {
      asked++;
      return ask();
    };
    try {
      const count = 64;
      const x = ctx.upload(randomArray(count, 7), 'x');
      const y = ctx.upload(randomArray(count, 8), 'y');
      const rec = ctx.recorder();
      recordAdd(ctx, rec, { x, y, count });
      const done = rec.submit();
      await new Promise((resolve) => setTimeout(resolve, 20));
      expect(asked, 'nobody awaited it yet').to.equal(0);
      expect(await done).to.deep.equal([]);
      expect(asked).to.equal(1);
      await done;
      expect(asked, 'asked once however often it is awaited').to.equal(1);
      const check = ctx.recorder();
      check.readback(x, 0, count * 4);
      const [sum] = await check.submit();
      expect(new Float32Array(sum!)[0]).to.be.closeTo(randomArray(count, 7)[0]! + randomArray(count, 8)[0]!, 1e-5);
    } finally {
      queue.onSubmittedWorkDone = ask;
    }
  });

  it('runs 300 dispatches with their own parameters, twice (segments, a grown uniform buffer, reused bind groups)', async () => {
    const count = 100;
    const x0 = randomArray(count, 5);
    const y0 = randomArray(count, 6);
    const x = ctx.upload(x0, 'x');
    const y = ctx.upload(y0, 'y');
    for (const pass of [1, 2]) {
      const rec = ctx.recorder();
      // Dispatch i adds y to the first 1 + i % 100 elements: element j gets 3 * (100 - j) additions per pass, so a
      // dropped dispatch or a mixed-up uniform slot shows.
      for (let i = 0; i < 300; i++) recordAdd(ctx, rec, { x, y, count: 1 + (i % count) });
      rec.readback(x, 0, count * 4);
      const [bytes] = await rec.submit();
      const got = new Float32Array(bytes!);
      for (let j = 0; j < count; j++) {
        let want = x0[j]!;
        for (let k = 0; k < 3 * (count - j) * pass; k++) want = Math.fround(want + y0[j]!);
        expect(got[j], `pass ${pass}, element ${j}`).to.equal(want);
      }
    }
  });

  it('binds the same buffers from every uniform slot with one bind group: the slot is a dynamic offset', async () => {
    const count = 64;
    const x0 = randomArray(count, 9);
    const y0 = randomArray(count, 10);
    const x = ctx.upload(x0, 'x');
    const y = ctx.upload(y0, 'y');
    const device = ctx.device;
    const create = device.createBindGroup.bind(device);
    let created = 0;
    device.createBindGroup = (descriptor) => {
      created++;
      return create(descriptor);
    };
    try {
      for (const dispatches of [3, 5]) {
        const rec = ctx.recorder();
        for (let i = 0; i < dispatches; i++) recordAdd(ctx, rec, { x, y, count });
        await rec.submit();
      }
    } finally {
      device.createBindGroup = create;
    }
    expect(created, 'eight dispatches from slots 0-4 of two recordings').to.equal(1);
    const rec = ctx.recorder();
    rec.readback(x, 0, count * 4);
    const got = new Float32Array((await rec.submit())[0]!);
    for (let j = 0; j < count; j++) {
      let want = x0[j]!;
      for (let k = 0; k < 8; k++) want = Math.fround(want + y0[j]!);
      expect(got[j], `element ${j}`).to.equal(want);
    }
  });

  it('gives a dispatch with a job list its four slots between one-slot dispatches, each reading its own', async () => {
    const count = 8;
    const x0 = randomArray(count, 13);
    const y0 = randomArray(count, 14);
    const x = ctx.upload(x0, 'x');
    const y = ctx.upload(y0, 'y');
    // Two fp16 blocks of 4 keys then 4 values each (1, 2, -1, 0.5 and their negations; 0.25 ... 4), 16 bytes apart.
    const halves = [
      0x3c00, 0x4000, 0xbc00, 0x3800, 0xbc00, 0xc000, 0x3c00, 0xb800, 0x3400, 0x3800, 0x3c00, 0x4000, 0x4400, 0x4000, 0x3c00, 0x3800,
    ];
    const src = ctx.upload(new Float32Array(new Uint16Array(halves).buffer), 'src');
    const keys = ctx.storage(8 * 4, 'keys');
    const values = ctx.storage(8 * 4, 'values');
    const rec = ctx.recorder();
    recordAdd(ctx, rec, { x, y, count });
    const jobs = [
      { srcOffset: 0, dstOffset: 0 },
      { srcOffset: 16, dstOffset: 4 },
    ];
    recordKvDequantFp16(ctx, rec, { src, keys, values, n: 4, jobs });
    recordAdd(ctx, rec, { x, y, count });
    rec.readback(x, 0, count * 4);
    rec.readback(keys, 0, 8 * 4);
    rec.readback(values, 0, 8 * 4);
    const [gotX, gotK, gotV] = (await rec.submit()).map((b) => [...new Float32Array(b)]);
    for (let j = 0; j < count; j++) expect(gotX![j], `x ${j}`).to.equal(Math.fround(Math.fround(x0[j]! + y0[j]!) + y0[j]!));
    expect(gotK).to.deep.equal([1, 2, -1, 0.5, 0.25, 0.5, 1, 2]);
    expect(gotV).to.deep.equal([-1, -2, 1, -0.5, 4, 2, 1, 0.5]);
  });

  it('binds ranges of a buffer where a kernel reads and writes, each range its own bind group, and counts commands', async () => {
    const half = 256;
    const x0 = randomArray(2 * half, 7);
    const y0 = randomArray(2 * half, 8);
    const x = ctx.upload(x0, 'x');
    const y = ctx.upload(y0, 'y');
    const range = (buffer: GPUBuffer, part: number) => ({ buffer, offset: part * half * 4, size: half * 4 });
    // x's second half += y's first half, then x's first half += y's second half; the second recording only the
    // latter, at the uniform slot the former had, so a bind group cached for that slot is wrong unless keyed by range.
    const toSecond = { x: range(x, 1), y: range(y, 0), count: half };
    const toFirst = { x: range(x, 0), y: range(y, 1), count: half };
    const copy = ctx.storage(2 * half * 4, 'copy');
    let got = new Float32Array(0);
    for (const adds of [[toSecond, toFirst], [toFirst]]) {
      const rec = ctx.recorder();
      for (const a of adds) recordAdd(ctx, rec, a);
      rec.copy(x, 0, copy, 0, 2 * half * 4);
      expect(rec.counts()).to.deep.equal({ dispatches: adds.length, copies: 1 });
      rec.readback(copy, 0, 2 * half * 4);
      got = new Float32Array((await rec.submit())[0]!);
    }
    for (let j = 0; j < half; j++) {
      const first = Math.fround(Math.fround(x0[j]! + y0[half + j]!) + y0[half + j]!);
      expect(got[j], `element ${j}`).to.equal(first);
      expect(got[half + j], `element ${half + j}`).to.equal(Math.fround(x0[half + j]! + y0[j]!));
    }
  });

  it('runs a copy recorded with copyFirst before the commands recorded earlier, which read what it copies', async () => {
    const count = 256;
    const staged = randomArray(count, 11);
    const y0 = randomArray(count, 12);
    const source = ctx.upload(staged, 'staged');
    const x = ctx.upload(new Float32Array(count), 'x');
    const y = ctx.upload(y0, 'y');
    const rec = ctx.recorder();
    recordAdd(ctx, rec, { x, y, count });
    rec.copyFirst(source, 0, x, 0, count * 4);
    expect(rec.counts()).to.deep.equal({ dispatches: 1, copies: 1 });
    rec.readback(x, 0, count * 4);
    const got = new Float32Array((await rec.submit())[0]!);
    for (let j = 0; j < count; j++) expect(got[j], `element ${j}`).to.equal(Math.fround(staged[j]! + y0[j]!));
  });

  it('a timed recorder names and times every dispatch, and its results equal an untimed one', async () => {
    if (!ctx.features.timestampQuery) {
      expect(() => ctx.recorder({ timed: true })).to.throw(KdnError, /timestamp/);
      return;
    }
    const plain = await runBoth(false);
    const timed = await runBoth(true);
    expect(timed.out).to.have.length(2);
    expect(timed.out[0]).to.deep.equal(plain.out[0]);
    expect(timed.out[1]).to.deep.equal(plain.out[1]);
    const times = timed.rec.dispatchTimes();
    expect(times.map((t) => t.kernel)).to.deep.equal(['add', 'swiglu']);
    for (const t of times) expect(t.ms).to.be.a('number').that.is.at.least(0).and.below(10_000);
    expect(() => plain.rec.dispatchTimes()).to.throw(KdnError, /timed Recorder/);
  });
});
