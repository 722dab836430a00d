/**
 * A blended forward on the GPU (ForwardBackend.blendForward; engine-adapter/cpu/forward.ts cpuBlendForward is the
 * reference). Two phases, each in chunks of at most `chunkTokens` rows like a prefill:
 *   1. with a check layer: every row runs the layers before it, writing fresh KV over the injected KV, and the check
 *      layer's first part (its K/V: deviation from the injected K/V recorded first, then written); each chunk's
 *      residual rows entering the check layer are kept, and with plan.massRows the prompt's queries, whose
 *      attention on every key is measured once all K/V are in. The signals are read back (the one host round trip)
 *      and the plan selects the rows to go on;
 *   2. the selected rows, gathered from the kept residual (or embedded from their tokens when there is no check
 *      layer), run the check layer and the rest at their own positions (kernels take a slots buffer), attending to
 *      the whole cache, and the last row gives the logits.
 * Each layer of the first chunk of each phase waits for its gate, so the recompute overlaps the context's arrival.
 */
import { KdnError } from '../../common/errors.ts';
import type { BlendOutput, BlendPlan, BlendSignals } from '../backend.ts';
import type { LayerGate } from '../layer-gates.ts';
import { recordAttentionMass } from './kernels/attention-mass.ts';
import { recordGatherRows } from './kernels/gather-rows.ts';
import { recordEmbeddingStep, recordLayer, recordLayerKV, recordLogits, type ChunkArgs, type ForwardParts } from './record-forward.ts';
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
        const signals = await this.fullLayers(tokens, position, plan, residual, gate);
        rows = checkedRows(plan.select(signals), tokens.length);
      }
      const out = await this.selectedLayers(tokens, position, rows, plan.checkLayer ?? 0, residual, logits, gate);
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

  /** Phase 1: every row through the layers before the check layer and the check layer's K/V; returns the signals. */
  private async fullLayers(
    tokens: Uint32Array,
    position: number,
    plan: BlendPlan,
    residual: GPUBuffer,
    gate?: LayerGate,
  ): Promise<BlendSignals> {
    const { ctx, s, cache, config: c } = this.f;
    const check = plan.checkLayer!;
    const n = tokens.length;
    const rowBytes = c.hiddenSize * 4;
    const qRowBytes = c.heads * c.headDim * 4;
    const deviation = this.buffer(n * 4, 'blend deviation');
    // The prompt's queries at the check layer, gathered from the chunks they fall in.
    const massFrom = n - plan.massRows;
    const promptQ = plan.massRows > 0 ? this.buffer(plan.massRows * qRowBytes, 'blend prompt queries') : null;
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
          if (l < check) {
            recordLayer(rec, this.f, a, l);
            return;
          }
          rec.copy(s.x, 0, residual, start * rowBytes, m * rowBytes);
          const q = recordLayerKV(rec, this.f, a, l, { buffer: deviation, offset: start });
          const from = Math.max(massFrom, start);
          if (promptQ && from < start + m)
            rec.copy(q, (from - start) * qRowBytes, promptQ, (from - massFrom) * qRowBytes, (start + m - from) * qRowBytes);
        });
      }
    }
    const mass = promptQ ? this.buffer(n * 4, 'blend prompt attention') : null;
    if (promptQ && mass) {
      this.pieces.launch((rec) => {
        recordAttentionMass(ctx, rec, {
          q: promptQ,
          rows: plan.massRows,
          posBase: position + massFrom,
          cacheK: cache.keys[check]!,
          heads: c.heads,
          kvHeads: c.kvHeads,
          headDim: c.headDim,
          window: c.slidingWindow,
          out: mass,
          position,
          keys: n,
        });
      });
    }
    const [dev, att] = await Promise.all([ctx.read(deviation, 0, n * 4), mass ? ctx.read(mass, 0, n * 4) : Promise.resolve(null)]);
    return { deviation: new Float32Array(dev), mass: att && new Float32Array(att) };
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
          ctx.device.queue.writeBuffer(
            s.ids,
            0,
            picked.map((r) => tokens[r]!),
          );
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
  if (!ok)
    throw new KdnError(
      'INTERNAL',
      `a blend plan selected ${rows.length} rows that are not ascending within [0, ${n}) and ending at the last`,
    );
  return rows;
}
