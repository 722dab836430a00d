import { KdnError } from '../../../common/errors.ts';
import type { TransformTable } from './transform-table.ts';

/**
 * The transform tables this process can encode and decode with, by hash. A KV object of the transform codec names
 * its table only by hash, so a reader registers the table (fetched from the origin, parsed and so verified by
 * parseTransformTable) before it opens such objects. Tables are immutable and few (one per model), so they are
 * never evicted.
 */
export class TransformTableRegistry {
  private readonly tables = new Map<string, TransformTable>();

  /** Adds a parsed table; registering the same table again is a no-op. */
  register(table: TransformTable): TransformTable {
    const known = this.tables.get(table.hash);
    if (known) return known;
    this.tables.set(table.hash, table);
    return table;
  }

  find(hash: string): TransformTable | undefined {
    return this.tables.get(hash);
  }

  /** The table with this hash; KV_UNSUPPORTED when it was never registered. */
  get(hash: string): TransformTable {
    const table = this.tables.get(hash);
    if (!table) {
      throw new KdnError('KV_UNSUPPORTED', `transform table ${hash.slice(0, 16)}... is not loaded`, {
        hint: "fetch the model's transform table from the origin (transform-tables/ keys) and register it before decoding",
        details: { table: hash },
      });
    }
    return table;
  }

  /** Forgets every table (tests that check the unknown-table path). */
  clear(): void {
    this.tables.clear();
  }
}

/** The process-wide registry every codec lookup uses. */
export const transformTables = new TransformTableRegistry();
