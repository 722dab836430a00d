import { KdnError } from '../../common/errors.ts';
import { FairQueue } from './fair-queue.ts';

/** Interactive work (queries, chat) runs before background work (ingest steps). */
export type WorkPriority = 'interactive' | 'background';

export interface WorkOptions {
  tenant: string;
  priority: WorkPriority;
  /** Work units (tokens) the task will compute, its share in fair queuing between tenants. */
  cost: number;
  /**
   * Cancels the task while it waits: it leaves the queue at once and run() rejects with the signal's reason when
   * that is a KdnError. A running task is not interrupted here; it gets the same signal through its own code.
   */
  signal?: AbortSignal;
}

export interface SchedulerOptions {
  /** Interactive tasks one tenant may have waiting; more is refused with RATE_LIMITED (429 and Retry-After). */
  maxWaitingPerTenant: number;
  /**
   * Interactive tasks that may run at once (default 1: one task at a time). More than 1 suits an engine that batches
   * concurrent sessions' decoding (CreateEngineOptions.batching): their queries then share its forwards. Background
   * tasks still run alone.
   */
  maxInteractive?: number;
  /** Called with waiting + running tasks whenever it changes (the queue-depth gauge). */
  onDepth?: (depth: number) => void;
}

interface Entry {
  readonly tenant: string;
  readonly cost: number;
  readonly priority: WorkPriority;
  start(): void;
  fail(err: KdnError): void;
}

/**
 * Work units (tokens) a tenant earns per round. Smaller than a typical task, so tenants alternate task by task
 * rather than in runs; a task costs at most 256 rounds of it in fair queuing.
 */
const QUANTUM = 64;
/** While background work waits, at most this many interactive tasks run in a row before one background task. */
const INTERACTIVE_STREAK = 8;
/** Smoothing of the running-time estimate behind Retry-After. */
const EWMA = 0.2;

/**
 * The one way onto the engine: one task runs at a time, or up to maxInteractive interactive tasks together on an
 * engine that batches them. Interactive work goes before background work (with a guard so background work is never
 * starved; a background task runs alone), tenants share each class by deficit round robin, and a task whose signal
 * fires while it waits leaves the queue at once. Background producers (ingest) submit one chunk's compute per task,
 * so an arriving query waits for at most one chunk.
 */
export class EngineScheduler {
  private readonly queues: Record<WorkPriority, FairQueue<Entry>> = {
    interactive: new FairQueue(QUANTUM, 256),
    background: new FairQueue(QUANTUM, 256),
  };
  private readonly running = new Set<Entry>();
  private readonly maxInteractive: number;
  private streak = 0;
  private closed: KdnError | undefined;
  private idle: (() => void)[] = [];
  /** Estimated milliseconds of one task, for Retry-After. */
  private taskMs = 1_000;

  constructor(private readonly options: SchedulerOptions) {
    this.maxInteractive = options.maxInteractive ?? 1;
    if (!Number.isInteger(this.maxInteractive) || this.maxInteractive < 1) {
      throw new KdnError('INVALID_ARGUMENT', `maxInteractive must be a positive integer, got ${options.maxInteractive}`);
    }
  }

  /** Tasks waiting or running. */
  get depth(): number {
    return this.queues.interactive.size + this.queues.background.size + this.running.size;
  }

  /** Tasks of `tenant` waiting in `priority`. */
  waiting(tenant: string, priority: WorkPriority): number {
    return this.queues[priority].waiting(tenant);
  }

  /** Seconds a client refused for a full queue should wait: roughly the time its waiting work takes to start. */
  retryAfterSeconds(waitingTasks: number): number {
    return Math.min(120, Math.max(1, Math.ceil((waitingTasks * this.taskMs) / 1000)));
  }

  run<T>(task: () => Promise<T>, options: WorkOptions): Promise<T> {
    if (this.closed) return Promise.reject(this.closed);
    if (options.signal?.aborted) return Promise.reject(cancelReason(options.signal));
    const waiting = this.queues[options.priority].waiting(options.tenant);
    if (options.priority === 'interactive' && waiting >= this.options.maxWaitingPerTenant) {
      const retryAfterS = this.retryAfterSeconds(waiting);
      return Promise.reject(
        new KdnError('RATE_LIMITED', `tenant "${options.tenant}" already has ${waiting} requests waiting for the engine`, {
          hint: 'wait for Retry-After seconds, or send fewer requests at once',
          details: { retryAfterS },
        }),
      );
    }
    return new Promise<T>((resolve, reject) => {
      const queue = this.queues[options.priority];
      const onAbort = (): void => {
        if (queue.remove(entry)) {
          this.changed();
          reject(cancelReason(options.signal!));
        }
      };
      const entry: Entry = {
        tenant: options.tenant,
        cost: options.cost,
        priority: options.priority,
        start: () => {
          options.signal?.removeEventListener('abort', onAbort);
          const began = performance.now();
          Promise.resolve()
            .then(task)
            .then(resolve, reject)
            .finally(() => {
              this.taskMs += EWMA * (performance.now() - began - this.taskMs);
              this.running.delete(entry);
              this.changed();
              this.next();
            });
        },
        fail: (err) => {
          options.signal?.removeEventListener('abort', onAbort);
          reject(err);
        },
      };
      options.signal?.addEventListener('abort', onAbort, { once: true });
      queue.push(entry);
      this.changed();
      this.next();
    });
  }

  /**
   * Admits nothing more and rejects every waiting task with `reason`; resolves once the running task (if any) has
   * ended. Used by shutdown, which bounds how long it waits for this.
   */
  close(reason: KdnError): Promise<void> {
    this.closed ??= reason;
    for (const queue of Object.values(this.queues)) {
      for (const entry of [...queue.items()]) {
        queue.remove(entry);
        entry.fail(reason);
      }
    }
    this.changed();
    if (this.running.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.idle.push(resolve));
  }

  /** Starts every task that may start now. */
  private next(): void {
    for (let entry = this.pick(); entry; entry = this.pick()) {
      this.running.add(entry);
      this.changed();
      entry.start();
    }
    if (this.running.size === 0) for (const resolve of this.idle.splice(0)) resolve();
  }

  /**
   * The next task to start, if one may: an interactive one while fewer than maxInteractive run (none background),
   * unless background work has waited through INTERACTIVE_STREAK of them; a background one once nothing runs.
   */
  private pick(): Entry | undefined {
    const { interactive, background } = this.queues;
    const runningBackground = [...this.running].some((e) => e.priority === 'background');
    const interactiveTurn = interactive.size > 0 && (background.size === 0 || this.streak < INTERACTIVE_STREAK);
    if (interactiveTurn && !runningBackground && this.running.size < this.maxInteractive) {
      this.streak = background.size > 0 ? this.streak + 1 : 0;
      return interactive.shift();
    }
    if (interactiveTurn || background.size === 0 || this.running.size > 0) return undefined;
    this.streak = 0;
    return background.shift();
  }

  private changed(): void {
    this.options.onDepth?.(this.depth);
  }
}

/** Why a cancelled task's run() rejects: the signal's KdnError reason, else a plain cancellation. */
export function cancelReason(signal: AbortSignal): KdnError {
  const reason: unknown = signal.reason;
  if (reason instanceof KdnError) return reason;
  return new KdnError('CANCELLED', 'the work was cancelled before it finished', { hint: 'the client went away or the job was cancelled' });
}
