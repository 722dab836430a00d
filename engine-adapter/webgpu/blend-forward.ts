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
 *      With plan.narrows (gradual filtering) phase 2 goes layer by layer instead: at each layer after the check
 *      layer the rows still running compute their K/V there (deviation first), the signals are read back, and the
 *      rows the plan keeps, gathered from the residual the layer before left, run the rest of the layer.
 * Each layer of the first chunk of each phase waits for its gate, so the recompute overlaps the context's arrival.
 * With a timeline on the gate (placing-timeline.ts), every piece that runs a layer is recorded as that layer's piece:
 * one per chunk of rows, so a layer may have several.
 */
import { KdnError } from '../../common/errors.ts';
import type { BlendOutput, BlendPlan, BlendSignals } from '../backend.ts';
import { indicesIn } from '../blend-selection.ts';
import type { LayerGate } from '../layer-gates.ts';
import type { PlacingTimeline } from '../placing-timeline.ts';
import type { Recorder } from './gpu-context.ts';
import { recordAttentionMass } from './kernels/attention-mass.ts';
import { recordGatherRows } from './kernels/gather-rows.ts';
import { recordEmbeddingStep, recordLayer, recordLayerKV, recordLogits, type ChunkArgs, type ForwardParts } from './record-forward.ts';
import { ScopedSubmissions } from './scoped-submissions.ts';

export class GpuBlendForward {
  private readonly pieces: ScopedSubmissions;
  /** Buffers made for this forward, destroyed once it ended. */
  private readonly owned: GPUBuffer[] = [];
  private timeline: PlacingTimeline | undefined;

  constructor(
    private readonly f: ForwardParts,
    private readonly chunkTokens: number,
  ) {
    this.pieces = new ScopedSubmissions(f.ctx);
  }

  async run(tokens: Uint32Array, position: number, plan: BlendPlan, logits: 'last' | 'none', gate?: LayerGate): Promise<BlendOutput> {
    this.timeline = gate?.timeline;
    try {
      const n = tokens.length;
      const all = Uint32Array.from({ length: n }, (_, r) => r);
      const layers = this.f.config.layers - (plan.checkLayer ?? 0);
      if (plan.checkLayer === null) {
        const { rows } = checkedSelection(plan.select(null, 0, all), all);
        const out = await this.selectedLayers(tokens, position, rows, 0, null, logits, gate);
        await this.pieces.settle();
        return { logits: out, rows, meanRows: rows.length };
      }
      const residual = this.buffer(n * this.f.config.hiddenSize * 4, 'blend residual');
      const signals = await this.fullLayers(tokens, position, plan, residual, gate);
      const selected = checkedSelection(plan.select(signals, plan.checkLayer, all), all);
      if (plan.narrows) {
        const out = await this.narrowingLayers({ n, position, plan, selected, residual, logits, gate });
        await this.pieces.settle();
        return { logits: out.logits, rows: out.rows, meanRows: out.ran / layers };
      }
      const { rows } = selected;
      const out = await this.selectedLayers(tokens, position, rows, plan.checkLayer, residual, logits, gate);
      await this.pieces.settle();
      return { logits: out, rows, meanRows: rows.length };
    } catch (err) {
      // A device error outranks the gate's or the plan's: it says why everything after it failed.
      await this.pieces.settle();
      throw err;
    } finally {
      for (const b of this.owned) b.destroy();
    }
  }

  /** Launches a piece that runs layer `l` (for some rows), recorded on the timeline if there is one. */
  private launchLayer(l: number, record: (rec: Recorder) => void): Promise<ArrayBuffer[]> {
    const done = this.pieces.launch(record);
    this.timeline?.piece(l, l + 1, this.f.ctx.device.queue.onSubmittedWorkDone());
    return done;
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
        this.launchLayer(l, (rec) => {
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
    const [dev, mass] = await this.readSignals(deviation, n, promptQ, { position, n, massRows: plan.massRows, layer: check });
    return { deviation: dev, mass };
  }

  /**
   * The `count` deviations recorded in `deviation`, and with `promptQ` (the last massRows rows' queries at `layer`)
   * their attention on the forward's `n` keys from `position` (all K/V of the layer written first).
   */
  private async readSignals(
    deviation: GPUBuffer,
    count: number,
    promptQ: GPUBuffer | null,
    at: { position: number; n: number; massRows: number; layer: number },
  ): Promise<[Float32Array, Float32Array | null]> {
    const { ctx, cache, config: c } = this.f;
    const mass = promptQ ? this.buffer(at.n * 4, 'blend prompt attention') : null;
    if (promptQ && mass) {
      this.pieces.launch((rec) => {
        recordAttentionMass(ctx, rec, {
          q: promptQ,
          rows: at.massRows,
          posBase: at.position + at.n - at.massRows,
          cacheK: cache.keys[at.layer]!,
          heads: c.heads,
          kvHeads: c.kvHeads,
          headDim: c.headDim,
          window: c.slidingWindow,
          out: mass,
          position: at.position,
          keys: at.n,
        });
      });
    }
    const [dev, att] = await Promise.all([ctx.read(deviation, 0, count * 4), mass ? ctx.read(mass, 0, at.n * 4) : Promise.resolve(null)]);
    return [new Float32Array(dev), att && new Float32Array(att)];
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
      const a = this.slotted(picked, position, isLast ? logits : 'none');
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
        last = this.launchLayer(l, (rec) => {
          recordLayer(rec, this.f, a, l);
          if (isLast && l === c.layers - 1) index = recordLogits(rec, this.f, a);
        });
      }
      if (from === c.layers && isLast) last = this.pieces.launch((rec) => void (index = recordLogits(rec, this.f, a)));
    }
    const results = await last;
    return index === null ? new Float32Array(0) : new Float32Array(results[index]!);
  }
  /** A chunk of `rows` (ascending) at their own positions from `position`. */
  private slotted(rows: Uint32Array, position: number, logits: 'last' | 'none'): ChunkArgs {
    const positions = rows.map((r) => position + r);
    const last = positions[positions.length - 1]!;
    return { tokens: rows.length, position: positions[0]!, logits, slots: { buffer: this.upload(positions, 'blend slots'), last } };
  }

  /**
   * Phase 2 with plan.narrows, layer by layer from the check layer: the rows `selected` there run it, then at each
   * later layer the rows still running give their signals and those the plan keeps run the layer. Returns the last
   * row's logits, the rows that ran the last layer and the rows run summed over the layers.
   */
  private async narrowingLayers(a: {
    n: number;
    position: number;
    plan: BlendPlan;
    selected: Selection;
    residual: GPUBuffer;
    logits: 'last' | 'none';
    gate?: LayerGate;
  }): Promise<{ logits: Float32Array; rows: Uint32Array; ran: number }> {
    const c = this.f.config;
    const check = a.plan.checkLayer!;
    // The rows whose residual entering the layer `held` holds, in order: every row at the check layer.
    let running: Uint32Array = Uint32Array.from({ length: a.n }, (_, r) => r);
    let held = a.residual;
    let selected = a.selected;
    let ran = 0;
    let out: Float32Array = new Float32Array(0);
    for (let l = check; l < c.layers; l++) {
      if (a.gate) await a.gate(l);
      if (l > check) selected = checkedSelection(a.plan.select(await this.runningSignals(running, held, a, l), l, running), running);
      const { rows, from } = selected;
      const next = l + 1 < c.layers ? this.buffer(rows.length * c.hiddenSize * 4, 'blend residual') : null;
      out = await this.layerOfRows({ rows, from, held, next, position: a.position, layer: l, logits: next ? 'none' : a.logits });
      ran += rows.length;
      running = rows;
      if (next) held = next;
    }
    return { logits: out, rows: selected.rows, ran };
  }

  /** Layer `l`'s K/V of the `running` rows (residual in `held`) written over the cache, and the signals measured first. */
  private async runningSignals(
    running: Uint32Array,
    held: GPUBuffer,
    a: { n: number; position: number; plan: BlendPlan },
    l: number,
  ): Promise<BlendSignals> {
    const { s, config: c } = this.f;
    const count = running.length;
    const rowBytes = c.hiddenSize * 4;
    const qRowBytes = c.heads * c.headDim * 4;
    const deviation = this.buffer(count * 4, 'blend deviation');
    // The prompt's rows run to the end, the last of the running rows.
    const massFrom = count - a.plan.massRows;
    const promptQ = a.plan.massRows > 0 ? this.buffer(a.plan.massRows * qRowBytes, 'blend prompt queries') : null;
    for (let start = 0; start < count; start += this.chunkTokens) {
      const m = Math.min(this.chunkTokens, count - start);
      const chunk = this.slotted(running.subarray(start, start + m), a.position, 'none');
      this.launchLayer(l, (rec) => {
        s.ensure(m, 1);
        rec.copy(held, start * rowBytes, s.x, 0, m * rowBytes);
        const q = recordLayerKV(rec, this.f, chunk, l, { buffer: deviation, offset: start });
        const from = Math.max(massFrom, start);
        if (promptQ && from < start + m)
          rec.copy(q, (from - start) * qRowBytes, promptQ, (from - massFrom) * qRowBytes, (start + m - from) * qRowBytes);
      });
    }
    const at = { position: a.position, n: a.n, massRows: a.plan.massRows, layer: l };
    const [measured, mass] = await this.readSignals(deviation, count, promptQ, at);
    const dev = new Float32Array(a.n);
    running.forEach((r, t) => (dev[r] = measured[t]!));
    return { deviation: dev, mass };
  }

  /**
   * Layer `layer` of `rows`, whose residual entering it is in `held` at the indices `from`; the residual leaving it
   * into `next` (in the rows' order), or with none the last row's logits.
   */
  private async layerOfRows(a: {
    rows: Uint32Array;
    from: Uint32Array;
    held: GPUBuffer;
    next: GPUBuffer | null;
    position: number;
    layer: number;
    logits: 'last' | 'none';
  }): Promise<Float32Array> {
    const { ctx, s, config: c } = this.f;
    const rowBytes = c.hiddenSize * 4;
    let index: number | null = null;
    let last: Promise<ArrayBuffer[]> = Promise.resolve([]);
    for (let start = 0; start < a.rows.length; start += this.chunkTokens) {
      const m = Math.min(this.chunkTokens, a.rows.length - start);
      const isLast = start + m === a.rows.length;
      const chunk = this.slotted(a.rows.subarray(start, start + m), a.position, isLast && !a.next ? a.logits : 'none');
      const rowIndex = this.upload(a.from.slice(start, start + m), 'blend rows');
      last = this.launchLayer(a.layer, (rec) => {
        s.ensure(m, 1);
        recordGatherRows(ctx, rec, { x: a.held, rows: rowIndex, out: s.x, count: m, cols: c.hiddenSize });
        recordLayer(rec, this.f, chunk, a.layer);
        if (a.next) rec.copy(s.x, 0, a.next, start * rowBytes, m * rowBytes);
        else if (isLast && chunk.logits !== 'none') index = recordLogits(rec, this.f, chunk);
      });
    }
    const results = await last;
    return index === null ? new Float32Array(0) : new Float32Array(results[index]!);
  }
}

/** Rows a plan selected among the rows still running, and where each sits among those (indicesIn). */
interface Selection {
  rows: Uint32Array;
  from: Uint32Array;
}

/** A plan's rows: ascending, among the `candidates` (ascending) it chose from, keeping the last of them. */
function checkedSelection(rows: Uint32Array, candidates: Uint32Array): Selection {
  const last = candidates[candidates.length - 1];
  const ascending = rows.every((r, i) => i === 0 || r > rows[i - 1]!);
  const from = rows.length > 0 && rows[rows.length - 1] === last && ascending ? indicesIn(candidates, rows) : null;
  if (from === null)
    throw new KdnError(
      'INTERNAL',
      `a blend plan selected ${rows.length} rows that are not ascending among its candidates, ending at the last`,
    );
  return { rows, from };
}
