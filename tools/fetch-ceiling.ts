/**
 * The ceiling of the same-host fast path's fetch threads (kdn/query/shm-source.ts, shm-hand-over.ts): N threads
 * taking object files from a shared counter, each reading its file from tmpfs a step of --step layers at a time into
 * one reused buffer with blocking reads and hashing every layer with BLAKE3 (KV format 2's layer digest), nothing
 * handed on. `read` and `hash` run either half alone. `stage` adds what the engine does with every verified
 * block on the fast path: read it again from its file into another buffer, as the injector reads it into staging
 * (kv-injector.ts; ordinary memory here, so an upper bound), which is all the host would do per byte if the layers
 * were checked after the upload instead. The files are sized as an 8B-shape 8k-token int4 context (32 objects of 32
 * layers, 335 MB in all). Prints GB/s of object bytes per mode and thread count (--reps runs each) as JSON.
 *   node --import tsx tools/fetch-ceiling.ts [--threads 1,2,4,8,12,16] [--modes both,read,hash,stage] [--reps 3]
 *                                            [--step 4]
 */
import { randomBytes } from 'node:crypto';
import { existsSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { Worker } from 'node:worker_threads';

const { values } = parseArgs({
  options: {
    threads: { type: 'string', default: '1,2,4,8,12,16' },
    reps: { type: 'string', default: '3' },
    step: { type: 'string', default: '4' },
    modes: { type: 'string', default: 'both,read,hash' },
  },
});
const OBJECTS = 32;
const LAYERS = 32;
const LAYER_BYTES = Math.floor(335_630_752 / OBJECTS / LAYERS);
const MODES = ['both', 'read', 'hash', 'stage'] as const;
type Mode = (typeof MODES)[number];
const modes = values.modes.split(',') as Mode[];
for (const mode of modes) {
  if (!MODES.includes(mode)) {
    console.error(`unknown mode ${mode}: use ${MODES.join(', ')}`);
    process.exit(2);
  }
}

/** Runs from source so it starts in milliseconds; waits for 'go' so that start-up is not timed. */
const WORKER = `
const { parentPort, workerData } = require('node:worker_threads');
const { openSync, readSync, closeSync } = require('node:fs');
const { blake3 } = require(workerData.blake3);
const { paths, layer, layers, step, mode, counter } = workerData;
const next = new Int32Array(counter);
const buf = Buffer.allocUnsafeSlow(layer * step);
const staged = Buffer.allocUnsafeSlow(layer);
parentPort.postMessage('ready');
parentPort.once('message', () => {
  let bytes = 0;
  for (let i = Atomics.add(next, 0, 1); i < paths.length; i = Atomics.add(next, 0, 1)) {
    const fd = openSync(paths[i], 'r');
    for (let l = 0; l < layers; l += step) {
      const n = Math.min(step, layers - l) * layer;
      if (mode !== 'hash') for (let at = 0; at < n; ) at += readSync(fd, buf, at, n - at, l * layer + at);
      if (mode !== 'read') for (let k = 0; k < n; k += layer) blake3(buf.subarray(k, k + layer));
      if (mode === 'stage')
        for (let k = 0; k < n; k += layer) for (let at = 0; at < layer; ) at += readSync(fd, staged, at, layer - at, l * layer + k + at);
      bytes += n;
    }
    closeSync(fd);
  }
  parentPort.postMessage(bytes);
});
`;

function once(w: Worker): Promise<unknown> {
  return new Promise((resolve, reject) => {
    w.once('message', resolve);
    w.once('error', reject);
  });
}

/** GB/s of `threads` workers over every file, timed from 'go' to the last one done. */
async function measure(paths: string[], threads: number, mode: Mode, step: number): Promise<number> {
  const workerData = {
    paths,
    layer: LAYER_BYTES,
    layers: LAYERS,
    step,
    mode,
    counter: new SharedArrayBuffer(4),
    blake3: createRequire(import.meta.url).resolve('@napi-rs/blake-hash'),
  };
  const workers = Array.from({ length: threads }, () => new Worker(WORKER, { eval: true, workerData }));
  try {
    await Promise.all(workers.map(once));
    const done = workers.map(once);
    const t0 = performance.now();
    for (const w of workers) w.postMessage('go');
    const bytes = (await Promise.all(done)) as number[];
    return bytes.reduce((a, b) => a + b, 0) / ((performance.now() - t0) / 1000) / 1e9;
  } finally {
    await Promise.all(workers.map((w) => w.terminate()));
  }
}

const dir = existsSync('/dev/shm') ? '/dev/shm' : tmpdir();
const paths = Array.from({ length: OBJECTS }, (_, i) => join(dir, `kdn-fetch-ceiling-${process.pid}-${i}`));
try {
  for (const path of paths) writeFileSync(path, randomBytes(LAYER_BYTES * LAYERS));
  const GBps: Record<string, Record<string, number[]>> = {};
  for (const mode of modes) {
    GBps[mode] = {};
    for (const threads of values.threads.split(',').map(Number)) {
      const runs: number[] = [];
      for (let r = 0; r < Number(values.reps); r++)
        runs.push(Number((await measure(paths, threads, mode, Number(values.step))).toFixed(2)));
      GBps[mode][String(threads)] = runs;
    }
  }
  console.log(
    JSON.stringify({ dir, objects: OBJECTS, layers: LAYERS, layerBytes: LAYER_BYTES, stepLayers: Number(values.step), GBps }, null, 1),
  );
} finally {
  for (const path of paths) rmSync(path, { force: true });
}
