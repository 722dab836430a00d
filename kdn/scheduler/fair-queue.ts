/** What a FairQueue orders: whose work it is and how much of it (in work units, e.g. tokens). */
export interface FairItem {
  readonly tenant: string;
  readonly cost: number;
}

/**
 * Deficit round robin over tenants: every tenant with waiting work earns `quantum` work units per round and spends
 * them on its tasks in arrival order, so a tenant with many or large tasks cannot starve one with a few small ones.
 */
export class FairQueue<T extends FairItem> {
  private readonly queues = new Map<string, T[]>();
  private readonly deficits = new Map<string, number>();
  /** Tenants with waiting work, in round order; the head is the one being served. */
  private readonly ring: string[] = [];
  private count = 0;

  /** A task's cost counts at most `maxRounds` quanta, so one huge task cannot make shift() spin. */
  constructor(
    private readonly quantum: number,
    private readonly maxRounds = 64,
  ) {}

  get size(): number {
    return this.count;
  }

  /** Tasks of `tenant` waiting. */
  waiting(tenant: string): number {
    return this.queues.get(tenant)?.length ?? 0;
  }

  push(item: T): void {
    let queue = this.queues.get(item.tenant);
    if (!queue) {
      queue = [];
      this.queues.set(item.tenant, queue);
      this.deficits.set(item.tenant, 0);
      this.ring.push(item.tenant);
    }
    queue.push(item);
    this.count++;
  }

  /** Takes `item` out wherever it waits; false if it was not waiting. */
  remove(item: T): boolean {
    const queue = this.queues.get(item.tenant);
    const at = queue?.indexOf(item) ?? -1;
    if (!queue || at < 0) return false;
    queue.splice(at, 1);
    this.count--;
    if (queue.length === 0) this.forget(item.tenant);
    return true;
  }

  /** The next task by deficit round robin, or undefined when nothing waits. */
  shift(): T | undefined {
    while (this.ring.length > 0) {
      const tenant = this.ring[0]!;
      const queue = this.queues.get(tenant)!;
      const head = queue[0]!;
      const cost = Math.min(Math.max(1, head.cost), this.quantum * this.maxRounds);
      const deficit = this.deficits.get(tenant)!;
      if (deficit >= cost) {
        queue.shift();
        this.count--;
        if (queue.length === 0) this.forget(tenant);
        else this.deficits.set(tenant, deficit - cost);
        return head;
      }
      this.deficits.set(tenant, deficit + this.quantum);
      this.ring.push(this.ring.shift()!);
    }
    return undefined;
  }

  /** Every waiting task, tenant by tenant. */
  *items(): IterableIterator<T> {
    for (const queue of this.queues.values()) yield* queue;
  }

  /** A tenant whose queue empties starts its next turn with no saved credit (DRR's rule). */
  private forget(tenant: string): void {
    this.queues.delete(tenant);
    this.deficits.delete(tenant);
    this.ring.splice(this.ring.indexOf(tenant), 1);
  }
}
