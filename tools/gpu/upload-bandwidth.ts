/**
 * Host-to-GPU bandwidth of the ways Dawn offers to move bytes into a storage buffer, for choosing how KV injection
 * uploads (engine-adapter/webgpu/kv-injector.ts). Each strategy moves --total MiB in --block MiB pieces into one
 * destination buffer and waits for the queue; prints GB/s per strategy and block size as JSON.
 *   writeBuffer:       queue.writeBuffer per block (Dawn stages it);
 *   mappedAtCreation:  a new MAP_WRITE|COPY_SRC buffer per block, filled while mapped, then copyBufferToBuffer;
 *   mapAsyncPool:      a pool of MAP_WRITE|COPY_SRC staging buffers re-mapped with mapAsync, then copied.
 * Run on a host with an NVIDIA GPU (docs/GPU.md): node --import tsx tools/gpu/upload-bandwidth.ts --total 1024 --blocks 1,8,32
 */
import { parseArgs } from 'node:util';
import { openDevice } from '../../engine-adapter/webgpu/device.ts';
import { GpuContext, Usage } from '../../engine-adapter/webgpu/gpu-context.ts';

const MAP_WRITE = 0x2;
const MAP_MODE_WRITE = 0x2;
const { values } = parseArgs({ options: { total: { type: 'string', default: '1024' }, blocks: { type: 'string', default: '1,8,32' } } });
const MiB = 1024 * 1024;
const total = Number(values.total) * MiB;
const blockSizes = values.blocks.split(',').map((b) => Number(b) * MiB);

const ctx = new GpuContext(await openDevice());
const device = ctx.device;
const dst = ctx.storage(64 * MiB, 'upload destination');
const source = new Uint8Array(Math.max(...blockSizes));
for (let i = 0; i < source.length; i++) source[i] = i * 31;

async function timed(run: (block: number) => Promise<void>, block: number): Promise<number> {
  await run(block);
  const t0 = performance.now();
  await run(block);
  await device.queue.onSubmittedWorkDone();
  return total / ((performance.now() - t0) / 1000) / 1e9;
}

const strategies: Record<string, (block: number) => Promise<void>> = {
  async writeBuffer(block) {
    for (let moved = 0; moved < total; moved += block)
      device.queue.writeBuffer(dst, (moved % (64 * MiB - block + 1)) & ~255, source.buffer, 0, block);
    await device.queue.onSubmittedWorkDone();
  },
  async mappedAtCreation(block) {
    for (let moved = 0; moved < total; moved += block) {
      const staging = device.createBuffer({ size: block, usage: MAP_WRITE | Usage.COPY_SRC, mappedAtCreation: true });
      new Uint8Array(staging.getMappedRange()).set(source.subarray(0, block));
      staging.unmap();
      const encoder = device.createCommandEncoder();
      encoder.copyBufferToBuffer(staging, 0, dst, (moved % (64 * MiB - block + 1)) & ~255, block);
      device.queue.submit([encoder.finish()]);
      staging.destroy();
    }
    await device.queue.onSubmittedWorkDone();
  },
  async mapAsyncPool(block) {
    const pool = Array.from({ length: 4 }, () =>
      device.createBuffer({ size: block, usage: MAP_WRITE | Usage.COPY_SRC, mappedAtCreation: true }),
    );
    let i = 0;
    for (let moved = 0; moved < total; moved += block, i++) {
      const staging = pool[i % pool.length]!;
      if (i >= pool.length) await staging.mapAsync(MAP_MODE_WRITE);
      new Uint8Array(staging.getMappedRange()).set(source.subarray(0, block));
      staging.unmap();
      const encoder = device.createCommandEncoder();
      encoder.copyBufferToBuffer(staging, 0, dst, (moved % (64 * MiB - block + 1)) & ~255, block);
      device.queue.submit([encoder.finish()]);
    }
    await device.queue.onSubmittedWorkDone();
    for (const b of pool) b.destroy();
  },
};

const results: Record<string, Record<string, number>> = {};
for (const [name, run] of Object.entries(strategies)) {
  results[name] = {};
  for (const block of blockSizes) results[name][`${block / MiB}MiB`] = Number((await timed(run, block)).toFixed(3));
}
console.log(JSON.stringify({ device: ctx.description, totalMiB: total / MiB, GBps: results }, null, 1));
await ctx.dispose();
