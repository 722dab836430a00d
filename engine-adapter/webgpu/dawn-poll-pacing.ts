/**
 * Paces the `webgpu` package's polling for Dawn's answers. While any answer is pending (a buffer map, a popped error
 * scope, onSubmittedWorkDone), its native code asks the global setImmediate to poll again on the next turn of the
 * event loop, creating a new native function each time: a waiting thread spins at tens of thousands of polls a
 * second, and that garbage sets off full collections on it, several milliseconds each, while it also places a
 * context (bench/HISTORY.md, Dawn's polls paced). So a chain of polls goes on every turn for its first IMMEDIATE_MS,
 * then once per timer tick (about a millisecond): an answer that comes within the window (an error scope, a decode
 * step) is seen at once, and a long wait (a context being placed) stops spinning once the window has passed, at the
 * cost of seeing its answer up to a millisecond late. Counting polls instead (8 on every turn, then timers) made every
 * decode step of the 1B shape wait for a timer: 15-20% fewer tokens a second on an H100
 * (bench/results/gpu/poll-pacing-ab-h100.json).
 *
 * The package reaches setImmediate through the global object, so pacing replaces the global on the thread that
 * opens a device. Only native callbacks that set up their own next turn from inside their own run are paced. A
 * promise's resolve function and a bound function also read as native: they pass through the wrapper and are counted
 * as immediate polls, but their next turn is set up from a microtask after their run, so they are never paced (a bound
 * function that rescheduled itself from inside its run would be, after IMMEDIATE_MS). Every other caller of
 * setImmediate gets the original, unchanged.
 */
import { promisify } from 'node:util';

/** How long a chain of polls runs on every turn of the event loop before the rest wait for a timer. */
const IMMEDIATE_MS = 10;

type ImmediateFn = typeof globalThis.setImmediate;

/** How the polls on this thread went since pacing was installed (for tests and diagnostics). */
export interface PollCounts {
  /** Native callbacks run on the next turn of the event loop (the package's polls, and promise resolutions). */
  immediate: number;
  /** Polls run on a timer. */
  paced: number;
}

class PollPacer {
  readonly counts: PollCounts = { immediate: 0, paced: 0 };
  /** When the current chain began: a poll asked for while a poll runs continues its chain. */
  private chainStart = 0;
  private polling = false;

  constructor(private readonly original: ImmediateFn) {}

  /** The replacement for setImmediate. */
  readonly setImmediate = ((callback: (...args: unknown[]) => void, ...args: unknown[]) => {
    if (!isNative(callback)) return this.original(callback, ...args);
    if (!this.polling) this.chainStart = performance.now();
    const run = (): void => {
      this.polling = true;
      try {
        callback(...args);
      } finally {
        this.polling = false;
      }
    };
    if (performance.now() - this.chainStart < IMMEDIATE_MS) {
      this.counts.immediate++;
      return this.original(run);
    }
    this.counts.paced++;
    return setTimeout(run, 0);
  }) as ImmediateFn;
}

/** A function implemented in native code (the package's poll), not in JavaScript. */
function isNative(callback: unknown): boolean {
  return typeof callback === 'function' && Function.prototype.toString.call(callback).endsWith('{ [native code] }');
}

let installed: PollPacer | undefined;

/** Installs pacing on this thread (once; later calls return the same counts). */
export function paceDawnPolling(): PollCounts {
  if (installed === undefined) {
    const original = globalThis.setImmediate;
    installed = new PollPacer(original);
    const paced = installed.setImmediate as ImmediateFn & { [promisify.custom]?: unknown };
    paced[promisify.custom] = (original as ImmediateFn & { [promisify.custom]?: unknown })[promisify.custom];
    globalThis.setImmediate = paced;
  }
  return installed.counts;
}
