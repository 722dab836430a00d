/**
 * A transform-codec table (storage/kv-object/codecs/transform-table.ts) on the GPU, in the layout
 * kernels/kv-expand-transform.wgsl reads: the basis once, and per level the component tables and the mean with the
 * constant part of zero-bit components folded in. Uploaded once per table and kept until the backend goes.
 */
import { KdnError } from '../../common/errors.ts';
import type { TransformTableData } from '../../storage/kv-object/codecs/transform-table.ts';
import type { GpuContext } from './gpu-context.ts';

/** One level's buffers, with the table's basis. */
export interface GpuTransformLevel {
  basis: GPUBuffer;
  mean: GPUBuffer;
  heads: GPUBuffer;
  comps: GPUBuffer;
}

const f32Bits = new Float32Array(1);
const u32Bits = new Uint32Array(f32Bits.buffer);
function bitsOf(x: number): number {
  f32Bits[0] = x;
  return u32Bits[0]!;
}

export class GpuTransformTable {
  private readonly basis: GPUBuffer;
  private readonly levels = new Map<number, GpuTransformLevel>();
  private readonly owned: GPUBuffer[] = [];

  constructor(
    private readonly ctx: GpuContext,
    private readonly table: TransformTableData,
  ) {
    this.basis = this.keep(ctx.upload(table.basis, 'transform basis'));
  }

  /** The buffers of `level`, uploaded on first use. */
  level(level: number): GpuTransformLevel {
    let out = this.levels.get(level);
    if (out === undefined) {
      if (!Number.isInteger(level) || level < 0 || level >= this.table.levels.length) {
        throw new KdnError('KV_UNSUPPORTED', `transform table has ${this.table.levels.length} levels, not level ${level}`, {
          hint: 'store the table the object was encoded with',
        });
      }
      out = this.upload(level);
      this.levels.set(level, out);
    }
    return out;
  }

  destroy(): void {
    for (const b of this.owned) b.destroy();
    this.owned.length = 0;
    this.levels.clear();
  }

  private upload(level: number): GpuTransformLevel {
    const { layers, kvHeads, headDim: d, basis } = this.table;
    const lv = this.table.levels[level]!;
    const slots = layers * 2 * kvHeads;
    const mean = Float32Array.from(this.table.mean);
    const heads = new Uint32Array(slots * 4);
    const comps = new Uint32Array(slots * d * 4);
    for (let slot = 0; slot < slots; slot++) {
      let prefix = 0;
      let rank = 0;
      for (let j = 0; j < d; j++) {
        const i = slot * d + j;
        const bits = lv.bits[i]!;
        comps.set([prefix, bits, bitsOf(lv.step[i]!), bitsOf(lv.offset[i]!)], 4 * i);
        if (bits > 0) rank = j + 1;
        // A zero-bit component always decodes to its offset: a constant the kernel gets through the mean.
        else for (let c = 0; c < d; c++) mean[slot * d + c]! += basis[i * d + c]! * lv.offset[i]!;
        prefix += bits;
      }
      heads.set([prefix, rank, 0, 0], 4 * slot);
    }
    const up = (data: Float32Array | Uint32Array, label: string): GPUBuffer =>
      this.keep(this.ctx.upload(data, `transform ${label} ${lv.name}`));
    return { basis: this.basis, mean: up(mean, 'mean'), heads: up(heads, 'heads'), comps: up(comps, 'components') };
  }

  private keep(buffer: GPUBuffer): GPUBuffer {
    this.owned.push(buffer);
    return buffer;
  }
}
