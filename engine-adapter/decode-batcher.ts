import { KdnError } from '../common/errors.ts';
import type { ForwardBackend, KVCacheHandle } from './backend.ts';
import { KvBudget } from './kv-budget.ts';

/** How the sequences of one engine decode together (CreateEngineOptions.batching). */
export interface BatchingOptions {
  /** Most sequences in one batched forward; 1 runs every forward alone, as a plain session does. */
  maxSequences: number;
  /** KV tokens the decoding sequences may hold together; a sequence that does not fit waits. Default: no limit. */
  kvBudgetTokens?: number;
}

/** Refuses options no batcher can run with. */
export function checkBatchingOptions(options: BatchingOptions): void {
  if (!Number.isInteger(options.maxSequences) || options.maxSequences < 1) {
    throw new KdnError('INVALID_ARGUMENT', `batching.maxSequences must be a positive integer, got ${options.maxSequences}`);
  }
  const budget = options.kvBudgetTokens;
  if (budget !== undefined && (!Number.isInteger(budget) || budget < 1)) {
    throw new KdnError('INVALID_ARGUMENT', `batching.kvBudgetTokens must be a positive integer, got ${budget}`);
  }
}

/** What a session asks of the batcher: room for its KV, and its forwards run in the next batched step. */
export interface DecodeScheduler {
  /** Resolves with the function that frees `tokens` of the KV budget, or null when `signal` fired while waiting. */
  admit(tokens: number, signal?: AbortSignal): Promise<(() => void) | null>;
  /** Runs `tokens` at `position` of `cache` in the next step with every other waiting sequence; their last logits. */
  step(cache: KVCacheHandle, tokens: Uint32Array, position: number): Promise<Float32Array>;
  /** No sequence is decoding or waiting for a step: a forward run alone now holds no other sequence up. */
  readonly idle: boolean;
}

interface Waiting {
  cache: KVCacheHandle;
  tokens: Uint32Array;
  position: number;
  resolve(logits: Float32Array): void;
  reject(err: unknown): void;
}

/**
 * Continuous batching: each session's forward joins the next step, and a step runs every waiting sequence (up to
 * maxSequences, the rest in the step after) in one ForwardBackend.batchForward, one step at a time. A step starts
 * once the event loop has run what was ready, so every sequence whose last step just ended (sampled, streamed its
 * token and asked for its next forward) is in it; a sequence leaves simply by not asking again (done, cancelled,
 * past its deadline) and a new one joins at the next step.
 */
export class DecodeBatcher implements DecodeScheduler {
  private readonly waiting: Waiting[] = [];
  private readonly budget: KvBudget | null;
  private running = false;
  private scheduled = false;
  /** Sequences admitted and not yet released: decoding, between their steps or in one. */
  private decoding = 0;
  /** Sequences per step, for the engine's figures. */
  private steps = 0;
  private rows = 0;

  constructor(
    private readonly backend: ForwardBackend,
    private readonly options: BatchingOptions,
  ) {
    checkBatchingOptions(options);
    this.budget = options.kvBudgetTokens === undefined ? null : new KvBudget(options.kvBudgetTokens);
  }

  /** Batched steps run so far and the sequences they carried. */
  get stats(): { steps: number; sequences: number } {
    return { steps: this.steps, sequences: this.rows };
  }

  get idle(): boolean {
    return this.decoding === 0 && !this.running && this.waiting.length === 0;
  }

  async admit(tokens: number, signal?: AbortSignal): Promise<(() => void) | null> {
    const free = this.budget === null ? (signal?.aborted ? null : () => undefined) : await this.budget.reserve(tokens, signal);
    if (free === null) return null;
    this.decoding++;
    let freed = false;
    return () => {
      if (freed) return;
      freed = true;
      this.decoding--;
      free();
    };
  }

  step(cache: KVCacheHandle, tokens: Uint32Array, position: number): Promise<Float32Array> {
    return new Promise((resolve, reject) => {
      if (this.waiting.some((w) => w.cache === cache)) {
        reject(new KdnError('CONFLICT', 'a session asked for two forwards in one batched step'));
        return;
      }
      this.waiting.push({ cache, tokens, position, resolve, reject });
      this.schedule();
    });
  }

  private schedule(): void {
    if (this.running || this.scheduled || this.waiting.length === 0) return;
    this.scheduled = true;
    // After the I/O and timers already due: the sequences of the step that just ended ask for their next forward
    // from promise callbacks, and a sequence of the engine thread reads its abort flag on a timer.
    setImmediate(() => {
      this.scheduled = false;
      void this.run();
    });
  }

  private async run(): Promise<void> {
    const batch = this.waiting.splice(0, this.options.maxSequences);
    this.running = true;
    try {
      const logits = await this.backend.batchForward(batch.map(({ cache, tokens, position }) => ({ cache, tokens, position })));
      this.steps++;
      this.rows += batch.length;
      batch.forEach((w, i) => w.resolve(logits[i]!));
    } catch (err) {
      // One sequence's bad input fails the step for all: run them alone so only that one fails.
      if (batch.length === 1) batch[0]!.reject(err);
      else await this.runAlone(batch);
    } finally {
      this.running = false;
      this.schedule();
    }
  }

  private async runAlone(batch: readonly Waiting[]): Promise<void> {
    for (const w of batch) {
      try {
        w.resolve(await this.backend.forward(w.cache, w.tokens, w.position, 'last'));
      } catch (err) {
        w.reject(err);
      }
    }
  }
}
