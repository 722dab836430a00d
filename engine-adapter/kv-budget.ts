import { KdnError } from '../common/errors.ts';

interface Waiter {
  tokens: number;
  grant: (release: () => void) => void;
}

/**
 * The KV tokens the sequences decoding together may hold at once. A sequence reserves its whole footprint (the
 * tokens it has plus those it may generate) before it joins and frees it when it leaves; a reservation that does not
 * fit waits, first come first served, so a long sequence is not overtaken forever by short ones.
 */
export class KvBudget {
  private used = 0;
  private readonly waiting: Waiter[] = [];

  constructor(readonly tokens: number) {
    if (!(tokens >= 1)) throw new KdnError('INVALID_ARGUMENT', `a KV budget of ${tokens} tokens holds nothing`);
  }

  get inUse(): number {
    return this.used;
  }

  /**
   * Resolves with the function that frees the reservation once `tokens` fit, or null when `signal` fires first
   * (the waiter leaves the queue). More than the whole budget is refused at once.
   */
  reserve(tokens: number, signal?: AbortSignal): Promise<(() => void) | null> {
    if (tokens > this.tokens) {
      const message = `a sequence of ${tokens} KV tokens exceeds the engine's KV budget of ${this.tokens}`;
      const hint = 'ask for fewer tokens, or start the engine with a larger KV budget';
      return Promise.reject(new KdnError('CONTEXT_TOO_LONG', message, { hint }));
    }
    if (signal?.aborted) return Promise.resolve(null);
    return new Promise((resolve) => {
      const waiter: Waiter = {
        tokens,
        grant: (release) => {
          signal?.removeEventListener('abort', onAbort);
          resolve(release);
        },
      };
      const onAbort = (): void => {
        const at = this.waiting.indexOf(waiter);
        if (at === -1) return;
        this.waiting.splice(at, 1);
        resolve(null);
        // The head may have been what held the others back.
        this.admit();
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.waiting.push(waiter);
      this.admit();
    });
  }

  private admit(): void {
    while (this.waiting.length > 0 && this.used + this.waiting[0]!.tokens <= this.tokens) {
      const waiter = this.waiting.shift()!;
      this.used += waiter.tokens;
      let freed = false;
      waiter.grant(() => {
        if (freed) return;
        freed = true;
        this.used -= waiter.tokens;
        this.admit();
      });
    }
  }
}
