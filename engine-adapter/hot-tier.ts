/**
 * The engine's hot tier: the expanded KV rows of recently injected chunks, kept on the backend (device memory on
 * webgpu, host arrays on cpu) across sessions, so a chunk seen again is placed by copies instead of a fetch, a
 * transfer and an expansion. Least recently used entries go first once the bytes held pass the tier's size.
 *
 * An entry is found only by the same tenant, object key and token hash it was kept under, on the engine whose model
 * computed it: one tenant's entry never serves another tenant's query, even for the same object key.
 */
import type { KVRows } from './backend.ts';
import type { ResidentKey } from './types.ts';

export class HotTier {
  /** In use order: the first entry is the least recently used. */
  private readonly entries = new Map<string, KVRows>();
  private held = 0;

  /** `capacityBytes` 0 disables the tier: nothing is kept. */
  constructor(
    readonly capacityBytes: number,
    private readonly fingerprint: string,
  ) {}

  get bytes(): number {
    return this.held;
  }

  get size(): number {
    return this.entries.size;
  }

  has(key: ResidentKey): boolean {
    return this.entries.has(this.id(key));
  }

  /** The entry's rows, now the most recently used; undefined when not resident. */
  use(key: ResidentKey): KVRows | undefined {
    const id = this.id(key);
    const rows = this.entries.get(id);
    if (rows === undefined) return undefined;
    this.entries.delete(id);
    this.entries.set(id, rows);
    return rows;
  }

  /**
   * Takes `rows` over under `key` (replacing an entry there), evicting the least recently used entries until it fits.
   * Rows larger than the whole tier are disposed at once; returns whether they were kept.
   */
  keep(key: ResidentKey, rows: KVRows): boolean {
    const id = this.id(key);
    this.drop(id);
    if (rows.bytes > this.capacityBytes) {
      rows.dispose();
      return false;
    }
    for (const oldest of this.entries.keys()) {
      if (this.held + rows.bytes <= this.capacityBytes) break;
      this.drop(oldest);
    }
    this.entries.set(id, rows);
    this.held += rows.bytes;
    return true;
  }

  clear(): void {
    for (const id of [...this.entries.keys()]) this.drop(id);
  }

  private drop(id: string): void {
    const rows = this.entries.get(id);
    if (rows === undefined) return;
    this.entries.delete(id);
    this.held -= rows.bytes;
    rows.dispose();
  }

  private id(key: ResidentKey): string {
    return JSON.stringify([key.tenant, key.objectKey, key.tokenHash, this.fingerprint]);
  }
}

/**
 * The hot tier's size when none is given: half of what a session at the engine's full capacity holds (f32 K and V of
 * every layer), so the tier and one longest session fit together in the memory that session alone may take.
 */
export function defaultHotTierBytes(shape: { layers: number; kvHeads: number; headDim: number }, capacity: number): number {
  return Math.floor((2 * shape.layers * shape.kvHeads * shape.headDim * 4 * capacity) / 2);
}
