/**
 * How mapped staging ranges set off V8's full collections on the thread that holds them, as the KV injector's do
 * (engine-adapter/webgpu/kv-injector.ts). A range (getMappedRange) counts as V8 external memory from when it is
 * taken until its buffer is unmapped, and V8 starts a full collection whenever external memory rises 64 MiB above its
 * low since the last one. For each count in --held, this maps that many staging buffers of --mib each, takes and
 * writes their ranges, holds them a millisecond, unmaps them and waits a millisecond, --cycles times; it reports the
 * external memory the held ranges added and the full collections and GC pause per cycle. No GPU work is involved, so
 * any adapter answers the same (a software one included). Prints JSON.
 *   node --import tsx tools/gpu/mapped-range-gc.ts [--mib 16] [--held 2,3,4,5,8] [--cycles 50]
 */
import { parseArgs } from 'node:util';
import { threadGc } from '../../engine-adapter/engine-work.ts';
import { openDevice } from '../../engine-adapter/webgpu/device.ts';

const MAP_WRITE = 0x2;
const COPY_SRC = 0x4;

const { values } = parseArgs({
  options: {
    mib: { type: 'string', default: '16' },
    held: { type: 'string', default: '2,3,4,5,8' },
    cycles: { type: 'string', default: '50' },
  },
});
const bytes = Number(values.mib) * 2 ** 20;
const heldCounts = values.held.split(',').map(Number);
const cycles = Number(values.cycles);

threadGc();

const opened = await openDevice();
const { device } = opened;
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));
const round = (x: number): number => Math.round(x * 1000) / 1000;

const results = [];
for (const held of heldCounts) {
  const buffers = Array.from({ length: held }, () => device.createBuffer({ size: bytes, usage: MAP_WRITE | COPY_SRC }));
  let addedMib = 0;
  await sleep(50);
  const before = threadGc();
  for (let c = 0; c < cycles; c++) {
    await Promise.all(buffers.map((b) => b.mapAsync(MAP_WRITE)));
    const external = process.memoryUsage().external;
    for (const b of buffers) new Uint8Array(b.getMappedRange())[0] = c;
    addedMib = (process.memoryUsage().external - external) / 2 ** 20;
    await sleep(1);
    for (const b of buffers) b.unmap();
    await sleep(1);
  }
  // perf_hooks reports collections a little after them.
  await sleep(50);
  const after = threadGc();
  for (const b of buffers) b.destroy();
  results.push({
    held,
    heldMib: held * Number(values.mib),
    externalAddedMib: round(addedMib),
    fullGcsPerCycle: round((after.majorGcs - before.majorGcs) / cycles),
    gcMsPerCycle: round(((after.gcSeconds - before.gcSeconds) * 1000) / cycles),
  });
}
console.log(JSON.stringify({ adapter: opened.description, node: process.version, mib: Number(values.mib), cycles, results }, null, 1));
device.destroy();
