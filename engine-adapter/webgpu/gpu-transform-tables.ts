/**
 * The transform tables a WebGPU backend holds on the device, by hash: each uploaded once, when the engine is told of
 * it (Engine.useTransformTable), and freed with the backend.
 */
import { KdnError } from '../../common/errors.ts';
import type { TransformTable } from '../../storage/kv-object/codecs/transform-table.ts';
import type { GpuContext } from './gpu-context.ts';
import { GpuTransformTable, type GpuTransformLevel } from './gpu-transform-table.ts';

export class GpuTransformTables {
  private readonly tables = new Map<string, GpuTransformTable>();

  constructor(private readonly ctx: GpuContext) {}

  /** Uploads `table` unless a table of its hash is already here. */
  use(table: TransformTable): void {
    if (this.tables.has(table.hash)) return;
    const gpu = new GpuTransformTable(this.ctx, table);
    this.tables.set(table.hash, gpu);
    // The default level is uploaded now, not on the first block's arrival.
    gpu.level(0);
  }

  level(hash: string, level: number): GpuTransformLevel {
    const table = this.tables.get(hash);
    if (table === undefined) {
      throw new KdnError('KV_UNSUPPORTED', `transform table ${hash} was not given to the engine`, {
        hint: 'register the table (Engine.useTransformTable) before injecting objects encoded with it',
      });
    }
    return table.level(level);
  }

  destroy(): void {
    for (const t of this.tables.values()) t.destroy();
    this.tables.clear();
  }
}
