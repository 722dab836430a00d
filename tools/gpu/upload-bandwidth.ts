/**
 * Host-to-GPU bandwidth of the ways Dawn offers to move bytes into a storage buffer, for choosing how KV injection
 * uploads (engine-adapter/webgpu/kv-injector.ts). Each strategy moves --total MiB in --block MiB pieces into one
 * destination buffer and waits for the queue; prints GB/s per strategy and block size as JSON.
 *   writeBuffer:       queue.writeBuffer per block (Dawn stages it);
 *   mappedAtCreation:  a new MAP_WRITE|COPY_SRC buffer per block, filled while mapped, then copyBufferToBuffer;
 *   mapAsyncPool:      a pool of MAP_WRITE|COPY_SRC staging buffers re-mapped with mapAsync, then copied;
 *   stagingCopy:       mapAsyncPool's GPU copies alone, from staging buffers filled once: what moving staged bytes
 *                      into device memory costs the GPU's queue, which the question's layers share;
 * and the host's ceilings for the staging copy every strategy makes on the device's thread:
 *   mappedWrite:       the same copies into staging buffers mapped once and never handed to the GPU;
 *   hostCopy:          the same copies into a ring of plain buffers as large as the pool, one thread;
 *   hostCopyThreads:   hostCopy split over --threads worker threads at once (what parallel writers could reach;
 *                      WebGPU gives a mapped range to the device's thread only, so no JavaScript thread but that
 *                      one can write it);
 *   fileReadMapped:    mappedWrite's copies made by read(2) from a tmpfs file on libuv's pool instead, --in-flight
 *                      at once (what a same-host edge's files read into staging reach, engine-adapter/webgpu/
 *                      block-files.ts; UV_THREADPOOL_SIZE sets the pool's threads, 4 by default);
 *   fileReadPool:      mapAsyncPool's staging buffers filled that way.
 * Each entry has a `_loopBusy` twin: the share of the time this thread's event loop was busy (1 for copies it makes).
 * Run on a host with an NVIDIA GPU (docs/GPU.md):
 *   node --import tsx tools/gpu/upload-bandwidth.ts --total 1024 --blocks 1,8,32 [--threads 8] [--in-flight 16]
 *     [--only fileReadMapped,mappedWrite]
 */
import { openSync, read, unlinkSync, writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { Worker } from 'node:worker_threads';
import { openDevice } from '../../engine-adapter/webgpu/device.ts';
import { GpuContext, Usage } from '../../engine-adapter/webgpu/gpu-context.ts';

const MAP_WRITE = 0x2;
const MAP_MODE_WRITE = 0x2;
const { values } = parseArgs({
  options: {
    total: { type: 'string', default: '1024' },
    blocks: { type: 'string', default: '1,8,32' },
    threads: { type: 'string', default: '8' },
    'in-flight': { type: 'string', default: '16' },
    only: { type: 'string' },
  },
});
const MiB = 1024 * 1024;
const total = Number(values.total) * MiB;
const blockSizes = values.blocks.split(',').map((b) => Math.round((Number(b) * MiB) / 256) * 256);
const threads = Number(values.threads);
const inFlight = Number(values['in-flight']);
/** Staging pools hold 4 buffers: the host ceilings copy into as much memory, so caches favour none of them. */
const POOL = 4;

const ctx = new GpuContext(await openDevice());
const device = ctx.device;
const dst = ctx.storage(64 * MiB, 'upload destination');
const source = new Uint8Array(Math.max(...blockSizes));
for (let i = 0; i < source.length; i++) source[i] = i * 31;

/** A strategy moves `total` bytes; one that times itself returns its seconds. */
type Strategy = (block: number) => Promise<number | undefined>;

async function timed(run: Strategy, block: number): Promise<number> {
  await run(block);
  const t0 = performance.now();
  const own = await run(block);
  await device.queue.onSubmittedWorkDone();
  const seconds = typeof own === 'number' ? own : (performance.now() - t0) / 1000;
  return total / seconds / 1e9;
}

const strategies: Record<string, Strategy> = {
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
  async stagingCopy(block) {
    if (!staged.has(block)) staged.set(block, stagingBuffers(block));
    const pool = staged.get(block)!;
    const encoder = device.createCommandEncoder();
    for (let moved = 0, i = 0; moved < total; moved += block, i++)
      encoder.copyBufferToBuffer(pool[i % pool.length]!, 0, dst, (moved % (64 * MiB - block + 1)) & ~255, block);
    device.queue.submit([encoder.finish()]);
    await device.queue.onSubmittedWorkDone();
  },
  async mappedWrite(block) {
    copyInto(
      reused(`mapped ${block}`, () => mappedRanges(block)),
      block,
    );
  },
  async hostCopy(block) {
    copyInto(
      reused(`host ${block}`, () => Array.from({ length: POOL }, () => new Uint8Array(block).fill(1))),
      block,
    );
  },
  hostCopyThreads: (block) => copyInThreads(block),
  async fileReadMapped(block) {
    const ring = reused(`mapped ${block}`, () => mappedRanges(block));
    const fd = await shmFile(block);
    const reads: Promise<unknown>[] = [];
    for (let moved = 0, i = 0; moved < total; moved += block, i++) {
      reads.push(new Promise((resolve, reject) => read(fd, ring[i % ring.length]!, 0, block, 0, (e) => (e ? reject(e) : resolve(0)))));
      if (reads.length >= inFlight) await reads.shift();
    }
    await Promise.all(reads);
  },
  async fileReadPool(block) {
    const perSlot = Math.max(1, Math.floor((16 * MiB) / block));
    const slot = perSlot * block;
    const pool = Array.from({ length: 4 }, () =>
      device.createBuffer({ size: slot, usage: MAP_WRITE | Usage.COPY_SRC, mappedAtCreation: true }),
    );
    const fd = await shmFile(block);
    let i = 0;
    for (let moved = 0; moved < total; moved += slot, i++) {
      const staging = pool[i % pool.length]!;
      if (i >= pool.length) await staging.mapAsync(MAP_MODE_WRITE);
      const range = new Uint8Array(staging.getMappedRange());
      const reads: Promise<unknown>[] = [];
      for (let k = 0; k < perSlot; k++)
        reads.push(new Promise((resolve, reject) => read(fd, range, k * block, block, 0, (e) => (e ? reject(e) : resolve(0)))));
      await Promise.all(reads);
      staging.unmap();
      const encoder = device.createCommandEncoder();
      encoder.copyBufferToBuffer(staging, 0, dst, 0, Math.min(slot, 64 * MiB));
      device.queue.submit([encoder.finish()]);
    }
    await device.queue.onSubmittedWorkDone();
    for (const b of pool) b.destroy();
  },
};

const shmFds = new Map<number, number>();
/** A tmpfs file of `block` bytes, read into staging by libuv's pool (UV_THREADPOOL_SIZE threads). */
async function shmFile(block: number): Promise<number> {
  if (!shmFds.has(block)) {
    const path = `/dev/shm/kdn-upload-bandwidth-${process.pid}-${block}`;
    writeFileSync(path, source.subarray(0, block));
    shmFds.set(block, openSync(path, 'r'));
    unlinkSync(path);
  }
  return shmFds.get(block)!;
}

/** Destinations kept from the warm-up pass to the timed one, as the injector keeps its pool: no page faults timed. */
const destinations = new Map<string, Uint8Array[]>();
function reused(key: string, make: () => Uint8Array[]): Uint8Array[] {
  if (!destinations.has(key)) destinations.set(key, make());
  return destinations.get(key)!;
}

/** Staging buffers filled once and unmapped, for the GPU to copy from, by block size. */
const staged = new Map<number, GPUBuffer[]>();
function stagingBuffers(block: number): GPUBuffer[] {
  return Array.from({ length: POOL }, () => {
    const buffer = device.createBuffer({ size: block, usage: MAP_WRITE | Usage.COPY_SRC, mappedAtCreation: true });
    new Uint8Array(buffer.getMappedRange()).fill(1);
    buffer.unmap();
    return buffer;
  });
}

/** Staging buffers mapped once and never unmapped (left to the device's disposal at exit). */
function mappedRanges(block: number): Uint8Array[] {
  return Array.from({ length: POOL }, () => {
    const buffer = device.createBuffer({ size: block, usage: MAP_WRITE | Usage.COPY_SRC, mappedAtCreation: true });
    return new Uint8Array(buffer.getMappedRange()).fill(1);
  });
}

function copyInto(ring: Uint8Array[], block: number): void {
  for (let moved = 0, i = 0; moved < total; moved += block, i++) ring[i % ring.length]!.set(source.subarray(0, block));
}

/** Each worker copies total / threads bytes in `block` pieces from its own source into its own ring. */
const COPY_WORKER = `
const { parentPort, workerData: { bytes, block, pool } } = require('node:worker_threads');
const source = new Uint8Array(block).fill(7);
const ring = Array.from({ length: pool }, () => new Uint8Array(block).fill(1));
parentPort.on('message', () => {
  for (let moved = 0, i = 0; moved < bytes; moved += block, i++) ring[i % pool].set(source);
  parentPort.postMessage('done');
});
parentPort.postMessage('ready');
`;

async function copyInThreads(block: number): Promise<number> {
  const workers = Array.from(
    { length: threads },
    () => new Worker(COPY_WORKER, { eval: true, workerData: { bytes: total / threads, block, pool: POOL } }),
  );
  const next = (w: Worker): Promise<unknown> => new Promise((resolve) => w.once('message', resolve));
  await Promise.all(workers.map(next));
  // Only the copies count: the caller's clock started before the workers did, so restart it from here.
  const t0 = performance.now();
  const done = workers.map(next);
  for (const w of workers) w.postMessage('go');
  await Promise.all(done);
  const seconds = (performance.now() - t0) / 1000;
  await Promise.all(workers.map((w) => w.terminate()));
  return seconds;
}

const results: Record<string, Record<string, number>> = {};
const only = values.only?.split(',');
for (const [name, run] of Object.entries(strategies)) {
  if (only && !only.includes(name)) continue;
  results[name] = {};
  for (const block of blockSizes) {
    const elu = performance.eventLoopUtilization();
    results[name][`${block / MiB}MiB`] = Number((await timed(run, block)).toFixed(3));
    results[name][`${block / MiB}MiB_loopBusy`] = Number(performance.eventLoopUtilization(elu).utilization.toFixed(3));
  }
}
console.log(JSON.stringify({ device: ctx.description, totalMiB: total / MiB, threads, GBps: results }, null, 1));
await ctx.dispose();
