/**
 * A transform-codec table (storage/kv-object/codecs/transform-table.ts) on the GPU, in the layout
 * kernels/kv-expand-transform.wgsl reads: the basis once, and per level the component tables and the mean with the
 * constant part of zero-bit components folded in. Uploaded once per table and kept until the backend goes.
 */
import { KdnError } from '../../common/errors.ts';
import type { GpuContext } from './gpu-context.ts';

/** What the upload reads of a table; tensor 0 is keys, 1 values. */
export interface TransformTableSource {
  layers: number;
  kvHeads: number;
  headDim: number;
  levels: number;
  mean(layer: number, tensor: number, head: number): Float32Array;
  /** [component][headDim], orthonormal rows. */
  basis(layer: number, tensor: number, head: number): Float32Array;
  quant(level: number, layer: number, tensor: number, head: number): { bits: ArrayLike<number>; step: ArrayLike<number>; offset: ArrayLike<number> };
}

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
    private readonly source: TransformTableSource,
  ) {
    const { headDim: d } = source;
    const basis = new Float32Array(this.headCount * d * d);
    this.eachHead((head, l, s, h) => basis.set(source.basis(l, s, h), head * d * d));
    this.basis = this.keep(ctx.upload(basis, 'transform basis'));
  }

  get shape(): { layers: number; kvHeads: number; headDim: number } {
    return { layers: this.source.layers, kvHeads: this.source.kvHeads, headDim: this.source.headDim };
  }

  /** The buffers of `level`, uploaded on first use. */
  level(level: number): GpuTransformLevel {
    let out = this.levels.get(level);
    if (out === undefined) {
      if (!Number.isInteger(level) || level < 0 || level >= this.source.levels) {
        throw new KdnError('KV_UNSUPPORTED', `transform table has ${this.source.levels} levels, not level ${level}`, { hint: 'store the table the object was encoded with' });
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

  private get headCount(): number {
    return this.source.layers * 2 * this.source.kvHeads;
  }

  private eachHead(fn: (head: number, layer: number, tensor: number, h: number) => void): void {
    const { layers, kvHeads } = this.source;
    for (let l = 0; l < layers; l++) for (let s = 0; s < 2; s++) for (let h = 0; h < kvHeads; h++) fn((l * 2 + s) * kvHeads + h, l, s, h);
  }

  private upload(level: number): GpuTransformLevel {
    const d = this.source.headDim;
    const mean = new Float32Array(this.headCount * d);
    const heads = new Uint32Array(this.headCount * 4);
    const comps = new Uint32Array(this.headCount * d * 4);
    this.eachHead((head, l, s, h) => {
      const q = this.source.quant(level, l, s, h);
      const basis = this.source.basis(l, s, h);
      const m = mean.subarray(head * d, (head + 1) * d);
      m.set(this.source.mean(l, s, h));
      let prefix = 0;
      let rank = 0;
      for (let j = 0; j < d; j++) {
        const bits = q.bits[j]!;
        const at = (head * d + j) * 4;
        comps.set([prefix, bits, bitsOf(q.step[j]!), bitsOf(q.offset[j]!)], at);
        if (bits > 0) rank = j + 1;
        // A zero-bit component always decodes to its offset: a constant the kernel gets through the mean.
        else for (let c = 0; c < d; c++) m[c]! += basis[j * d + c]! * q.offset[j]!;
        prefix += bits;
      }
      heads.set([prefix, rank, 0, 0], head * 4);
    });
    const up = (data: Float32Array | Uint32Array, label: string): GPUBuffer => this.keep(this.ctx.upload(data, `transform ${label} L${level}`));
    return { basis: this.basis, mean: up(mean, 'mean'), heads: up(heads, 'heads'), comps: up(comps, 'components') };
  }

  private keep(buffer: GPUBuffer): GPUBuffer {
    this.owned.push(buffer);
    return buffer;
  }
}
