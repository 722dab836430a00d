/**
 * A preload that counts, on every thread of a process, the WebGPU (Dawn) calls its code makes, how much each raised
 * the thread's V8 external memory, and its garbage collections by kind: where an engine thread's host work and
 * garbage come from, on a GPU host where a CPU profile names only "native" and "(garbage collector)". Each thread
 * writes `<dir>/<pid>-<threadId>.json` every 2 s and when it exits: per call, how often, the milliseconds the calls
 * took on the calling thread and the MiB they added to external memory; per GC kind, how many and their
 * milliseconds; and a series of [ms since start, external MiB, createBindGroup calls, getMappedRange calls, full
 * collections] every 250 ms, to tell one query from the next.
 *   node --import tsx --import ./tools/gpu/dawn-call-counts.mjs bench/run.ts ttft ...   (DAWN_CALLS_DIR, default
 *   .tmp/dawn-calls)
 * It wraps the methods of the `webgpu` package's classes, so the counts include every caller, and costs a few
 * microseconds per call: compare counts, not timings, from a run under it. Plain JavaScript, so that it loads in worker
 * threads too (an engine on its own thread, fetch threads), which start before tsx is registered in them.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { constants, PerformanceObserver, performance } from 'node:perf_hooks';
import v8 from 'node:v8';
import { threadId } from 'node:worker_threads';

/** Per class, the methods counted. */
const WATCHED = {
  GPUDevice: ['createBuffer', 'createBindGroup', 'createCommandEncoder', 'pushErrorScope', 'popErrorScope'],
  GPUBuffer: ['getMappedRange', 'unmap', 'mapAsync', 'destroy'],
  GPUQueue: ['writeBuffer', 'submit', 'onSubmittedWorkDone'],
  GPUCommandEncoder: ['beginComputePass', 'copyBufferToBuffer', 'finish'],
  GPUComputePassEncoder: ['setPipeline', 'setBindGroup', 'dispatchWorkgroups', 'end'],
};

/**
 * @typedef {object} CallCount
 * @property {number} calls
 * @property {number} ms the milliseconds the calls took on the calling thread (a promise-returning call's asking, not
 *   its answer)
 * @property {number} externalMiB the MiB the calls added to this thread's external memory (what unmap or a collection
 *   gives back is not subtracted)
 */

const dir = process.env.DAWN_CALLS_DIR ?? '.tmp/dawn-calls';
/** @type {Record<string, CallCount>} */
const calls = {};
/** @type {Record<string, { count: number, ms: number }>} */
const gcs = {};
/** @type {number[][]} */
const series = [];
const externalMiB = () => v8.getHeapStatistics().external_memory / 2 ** 20;

/** @param {Record<string, { prototype: Record<string, unknown> }>} classes */
function watch(classes) {
  for (const [name, methods] of Object.entries(WATCHED)) {
    const proto = classes[name]?.prototype;
    if (proto === undefined) continue;
    for (const method of methods) {
      const original = proto[method];
      if (typeof original !== 'function') continue;
      const count = (calls[`${name}.${method}`] = { calls: 0, ms: 0, externalMiB: 0 });
      proto[method] = function (...args) {
        const before = externalMiB();
        const began = performance.now();
        try {
          return original.apply(this, args);
        } finally {
          count.ms += performance.now() - began;
          count.calls++;
          count.externalMiB += Math.max(0, externalMiB() - before);
        }
      };
    }
  }
}

/** @type {Record<number, string>} */
const GC_KINDS = {
  [constants.NODE_PERFORMANCE_GC_MINOR]: 'minor',
  [constants.NODE_PERFORMANCE_GC_MAJOR]: 'major',
  [constants.NODE_PERFORMANCE_GC_INCREMENTAL]: 'incremental',
  [constants.NODE_PERFORMANCE_GC_WEAKCB]: 'weakcb',
};
new PerformanceObserver((list) => {
  for (const entry of list.getEntries()) {
    const kind = GC_KINDS[entry.detail?.kind ?? 0] ?? 'other';
    const g = (gcs[kind] ??= { count: 0, ms: 0 });
    g.count++;
    g.ms += entry.duration;
  }
}).observe({ entryTypes: ['gc'] });

function dump() {
  const file = `${dir}/${process.pid}-${threadId}.json`;
  writeFileSync(file, `${JSON.stringify({ pid: process.pid, threadId, calls, gcs, series })}\n`);
}

const webgpu = createRequire(`${process.cwd()}/`)('webgpu');
watch(webgpu.globals);
mkdirSync(dir, { recursive: true });
setInterval(() => {
  series.push([
    Math.round(performance.now()),
    Math.round(externalMiB()),
    calls['GPUDevice.createBindGroup']?.calls ?? 0,
    calls['GPUBuffer.getMappedRange']?.calls ?? 0,
    gcs.major?.count ?? 0,
  ]);
}, 250).unref();
setInterval(dump, 2000).unref();
process.on('exit', dump);
