/**
 * A blended forward on the GPU (ForwardBackend.blendForward; engine-adapter/cpu/forward.ts cpuBlendForward is the
 * reference). Two phases, each in chunks of at most `chunkTokens` rows like a prefill:
 *   1. with a check layer: every row runs layers [0, check], writing fresh KV over the injected KV; at the check
 *      layer each row's K/V deviation from the injected K/V is recorded first, and each chunk's residual rows are
 *      kept. The deviations are read back (the one host round trip) and the plan selects the rows to go on;
 *   2. the selected rows, gathered from the kept residual (or embedded from their tokens when there is no check
 *      layer), run the remaining layers at their own positions (kernels take a slots buffer), attending to the
 *      whole cache, and the last row gives the logits.
 * Each layer of the first chunk of each phase waits for its gate, so the recompute overlaps the context's arrival.
 */
import { KdnError } from '../../common/errors.ts';
import type { BlendOutput, BlendPlan } from '../backend.ts';
import type { LayerGate } from '../layer-gates.ts';
import { recordGatherRows } from './kernels/gather-rows.ts';
import { recordEmbeddingStep, recordLayer, recordLogits, type ChunkArgs, type ForwardParts } from './record-forward.ts';
import { ScopedSubmissions } from './scoped-submissions.ts';

export class GpuBlendForward {
  private readonly pieces: ScopedSubmissions;
  /** Buffers made for this forward, destroyed once it ended. */
  private readonly owned: GPUBuffer[] = [];

  constructor(
    private readonly f: ForwardParts,
    private readonly chunkTokens: number,
  ) {
    this.pieces = new ScopedSubmissions(f.ctx);
  }

  async run(tokens: Uint32Array, position: number, plan: BlendPlan, logits: 'last' | 'none', gate?: LayerGate): Promise<BlendOutput> {
    try {
      let rows: Uint32Array;
      let residual: GPUBuffer | null = null;
      if (plan.checkLayer === null) {
        rows = checkedRows(plan.select(null), tokens.length);
      } else {
        residual = this.buffer(tokens.length * this.f.config.hiddenSize * 4, 'blend residual');
        const deviation = await this.fullLayers(tokens, position, plan.checkLayer, residual, gate);
        rows = checkedRows(plan.select(deviation), tokens.length);
      }
      const out = await this.selectedLayers(tokens, position, rows, plan.checkLayer === null ? 0 : plan.checkLayer + 1, residual, logits, gate);
      await this.pieces.settle();
      return { logits: out, rows };
    } catch (err) {
      // A device error outranks the gate's or the plan's: it says why everything after it failed.
      await this.pieces.settle();
      throw err;
    } finally {
      for (const b of this.owned) b.destroy();
    }
  }

  private buffer(bytes: number, label: string): GPUBuffer {
    const b = this.f.ctx.storage(bytes, label);
    this.owned.push(b);
    return b;
  }

  private upload(data: Uint32Array, label: string): GPUBuffer {
    const b = this.f.ctx.upload(data, label);
    this.owned.push(b);
    return b;
  }

  /** Phase 1: every row through layers [0, check]; returns each row's deviation at the check layer. */
  private async fullLayers(tokens: Uint32Array, position: number, check: number, residual: GPUBuffer, gate?: LayerGate): Promise<Float32Array> {
    const { ctx, s, cache } = this.f;
    const n = tokens.length;
    const rowBytes = this.f.config.hiddenSize * 4;
    const deviation = this.buffer(n * 4, 'blend deviation');
    for (let start = 0; start < n; start += this.chunkTokens) {
      const m = Math.min(this.chunkTokens, n - start);
      const a: ChunkArgs = { tokens: m, position: position + start, logits: 'none' };
      for (let l = 0; l <= check; l++) {
        if (start === 0 && gate) await gate(l);
        this.pieces.launch((rec) => {
          if (l === 0) {
            cache.reserve(position + n, () => rec);
            s.ensure(m, 1);
            ctx.device.queue.writeBuffer(s.ids, 0, tokens, start, m);
            recordEmbeddingStep(rec, this.f, a);
          }
          recordLayer(rec, this.f, a, l, l === check ? { buffer: deviation, offset: start } : undefined);
          if (l === check) rec.copy(s.x, 0, residual, start * rowBytes, m * rowBytes);
        });
      }
    }
    return new Float32Array(await ctx.read(deviation, 0, n * 4));
  }

  /** Phase 2: the selected rows through layers [from, layers) at their own positions; the last row's logits. */
  private async selectedLayers(
    tokens: Uint32Array,
    position: number,
    rows: Uint32Array,
    from: number,
    residual: GPUBuffer | null,
    logits: 'last' | 'none',
    gate?: LayerGate,
  ): Promise<Float32Array> {
    const { ctx, s, cache, config: c } = this.f;
    let index: number | null = null;
    let last: Promise<ArrayBuffer[]> = Promise.resolve([]);
    for (let start = 0; start < rows.length; start += this.chunkTokens) {
      const picked = rows.subarray(start, Math.min(rows.length, start + this.chunkTokens));
      const m = picked.length;
      const isLast = start + m === rows.length;
      const positions = picked.map((r) => position + r);
      const a: ChunkArgs = {
        tokens: m,
        position: positions[0]!,
        logits: isLast ? logits : 'none',
        slots: { buffer: this.upload(positions, 'blend slots'), last: positions[m - 1]! },
      };
      const rowIndex = residual ? this.upload(picked, 'blend rows') : null;
      this.pieces.launch((rec) => {
        cache.reserve(position + tokens.length, () => rec);
        s.ensure(m, 1);
        if (residual && rowIndex) {
          recordGatherRows(ctx, rec, { x: residual, rows: rowIndex, out: s.x, count: m, cols: c.hiddenSize });
        } else {
          ctx.device.queue.writeBuffer(s.ids, 0, picked.map((r) => tokens[r]!));
          recordEmbeddingStep(rec, this.f, a);
        }
      });
      for (let l = from; l < c.layers; l++) {
        if (start === 0 && gate) await gate(l);
        last = this.pieces.launch((rec) => {
          recordLayer(rec, this.f, a, l);
          if (isLast && l === c.layers - 1) index = recordLogits(rec, this.f, a);
        });
      }
      if (from === c.layers && isLast) last = this.pieces.launch((rec) => void (index = recordLogits(rec, this.f, a)));
    }
    const results = await last;
    return index === null ? new Float32Array(0) : new Float32Array(results[index]!);
  }
}

/** A plan's rows: ascending, within the forward's `n` rows, keeping the last. */
function checkedRows(rows: Uint32Array, n: number): Uint32Array {
  const ok = rows.length > 0 && rows[rows.length - 1] === n - 1 && rows.every((r, i) => i === 0 || r > rows[i - 1]!);
  if (!ok) throw new KdnError('INTERNAL', `a blend plan selected ${rows.length} rows that are not ascending within [0, ${n}) and ending at the last`);
  return rows;
}
