/**
 * What a pending answer from Dawn costs the thread that waits for it. While any of its promises is pending (a map, a
 * popped error scope, onSubmittedWorkDone), the `webgpu` package polls for it with setImmediate on every turn of the
 * event loop: the loop never rests, and each turn makes garbage. This submits GPU work that takes a while (buffer
 * copies), then waits for it either by awaiting onSubmittedWorkDone (pending) or by sleeping about as long with nothing
 * asked (idle), and reports for each wait the event loop's active share, the garbage collections and their time.
 * Why the engine asks Dawn only for what it awaits (engine-adapter/webgpu/gpu-context.ts whenAwaited) and paces the
 * package's polls (engine-adapter/webgpu/dawn-poll-pacing.ts, installed by openDevice, so the pending waits here are
 * paced as the engine's are). Prints JSON.
 *   node --import tsx tools/gpu/dawn-poll-cost.ts [--mib 256] [--copies 24] [--rounds 3]
 */
import { parseArgs } from 'node:util';
import { performance, PerformanceObserver } from 'node:perf_hooks';
import { openDevice } from '../../engine-adapter/webgpu/device.ts';

const COPY_SRC = 0x4;
const COPY_DST = 0x8;

const { values } = parseArgs({
  options: { mib: { type: 'string', default: '256' }, copies: { type: 'string', default: '24' }, rounds: { type: 'string', default: '3' } },
});
const bytes = Number(values.mib) * 2 ** 20;
const copies = Number(values.copies);
const rounds = Number(values.rounds);

const gc = { count: 0, ms: 0 };
new PerformanceObserver((list) => {
  for (const entry of list.getEntries()) {
    gc.count++;
    gc.ms += entry.duration;
  }
}).observe({ entryTypes: ['gc'] });

const opened = await openDevice();
const { device } = opened;
const a = device.createBuffer({ size: bytes, usage: COPY_SRC | COPY_DST });
const b = device.createBuffer({ size: bytes, usage: COPY_SRC | COPY_DST });

/** Submits `copies` copies between the two buffers: GPU work long enough to wait on. */
function submitWork(): void {
  const encoder = device.createCommandEncoder();
  for (let i = 0; i < copies; i++) encoder.copyBufferToBuffer(i % 2 ? b : a, 0, i % 2 ? a : b, 0, bytes);
  device.queue.submit([encoder.finish()]);
}

/** Waits for submitted work one way; the loop's active share, collections and their time meanwhile. */
async function wait(
  how: 'pending' | 'idle',
  sleepMs: number,
): Promise<{ how: string; ms: number; loopActive: number; gcs: number; gcMs: number }> {
  submitWork();
  gc.count = 0;
  gc.ms = 0;
  const elu = performance.eventLoopUtilization();
  const t0 = performance.now();
  if (how === 'pending') await device.queue.onSubmittedWorkDone();
  else await new Promise((resolve) => setTimeout(resolve, sleepMs));
  const ms = performance.now() - t0;
  const loopActive = performance.eventLoopUtilization(elu).utilization;
  const result = { how, ms: round(ms), loopActive: round(loopActive), gcs: gc.count, gcMs: round(gc.ms) };
  if (how === 'idle') await device.queue.onSubmittedWorkDone();
  return result;
}

const round = (v: number): number => Math.round(v * 1000) / 1000;

const waits = [];
for (let r = 0; r < rounds; r++) {
  const pending = await wait('pending', 0);
  waits.push(pending, await wait('idle', pending.ms));
}
a.destroy();
b.destroy();
opened.release();
process.stdout.write(`${JSON.stringify({ device: opened.description, mib: Number(values.mib), copies, waits }, null, 1)}\n`);
