/**
 * Jobs per dispatch for the expansion kernels (expand-jobs.wgsl holds the same MAX_JOBS): injected layer blocks
 * of one layer and shape share a dispatch, each block a job the kernel finds at its workgroup z. 60 jobs and a
 * kernel's scalars fill the 1 KiB of uniform parameters a dispatch may take (gpu-context.ts MAX_PARAM_SLOTS): an
 * 8k-token context's layer is then one dispatch of each kind, where 12 (one 256-byte slot) took three.
 */
import type { Params } from '../gpu-context.ts';

export const MAX_JOBS = 60;

/** One uploaded block for the dequantization kernels: its byte offset in the source buffer (a multiple of 4) and
 * its float index in the caches. */
export interface ExpandJob {
  srcOffset: number;
  dstOffset: number;
}

/** Calls `each` with consecutive runs of at most MAX_JOBS jobs. */
export function inJobRuns<J>(jobs: readonly J[], each: (run: readonly J[]) => void): void {
  for (let i = 0; i < jobs.length; i += MAX_JOBS) each(jobs.slice(i, i + MAX_JOBS));
}

/**
 * Appends a run's jobs to its dispatch's parameters, each as the vec4u `words(job)`, then empty jobs up to MAX_JOBS:
 * the kernel's uniform struct declares all of them, and its binding must cover the struct whole.
 */
export function withJobs<J>(params: Params, run: readonly J[], words: (job: J) => [number, number, number, number]): Params {
  for (const job of run) params.vec4u(...words(job));
  for (let i = run.length; i < MAX_JOBS; i++) params.vec4u(0, 0, 0, 0);
  return params;
}
