/**
 * A forward pass over several sequences, each on its own KV cache, recorded into one submission: the rows of every
 * sequence are stacked in the shared scratch for the norms, projections, RoPE (each row at its own sequence's
 * position) and MLP, each weight read once per step for all of them. Per sequence and layer only what touches its
 * cache is recorded: two copies of its K/V rows into the cache, and attention. The sequences of a few rows
 * (decoding ones) are stacked first and attend together, a dispatch per layer and pair of cache blocks
 * (kernels/attention-ragged.ts); a longer one (a prompt joining the step) attends alone, reading its queries from
 * the stacked rows and writing its output there (staged through copies where its rows do not start at an offset a
 * binding can take). The same decoder as record-forward.ts, built from its pieces and the same kernels.
 */
import type { BufferRange, Recorder } from './gpu-context.ts';
import type { GpuKVCache } from './gpu-kv-cache.ts';
import { recordAttention } from './kernels/attention.ts';
import { RaggedAttention, raggedFits, type RaggedShape } from './kernels/attention-ragged.ts';
import { recordEmbedding } from './kernels/embedding.ts';
import { recordMatmul } from './kernels/matmul.ts';
import { recordRmsNorm } from './kernels/rmsnorm.ts';
import { recordRope } from './kernels/rope.ts';
import { recordOutputAndMlp, recordProjections, type ModelParts } from './record-forward.ts';
import type { BatchSequence } from '../backend.ts';

export type GpuBatchSequence = BatchSequence<GpuKVCache>;

/** Where a batched step's sequences sit in the stacked rows. */
interface Layout {
  /** Row of each sequence's first token. */
  firsts: number[];
  total: number;
  /** The position of every stacked row, for RoPE (u32 [total]). */
  positions: GPUBuffer;
  /** The attention of the sequences stacked first, served together; null when fewer than two fit. */
  ragged: RaggedAttention | null;
  /** Whether sequence i attends in `ragged`. */
  inRagged: boolean[];
}

/**
 * Records and submits the sequences' forward (synchronously, so a caller's error scopes cover exactly it) into `rec`
 * (a timed one when profiling); the returned promise resolves with each sequence's last-row logits.
 */
export function gpuBatchForward(f: ModelParts, sequences: readonly GpuBatchSequence[], rec = f.ctx.recorder()): Promise<Float32Array[]> {
  const { ctx, s, config: c } = f;
  for (const seq of sequences) seq.cache.reserve(seq.position + seq.tokens.length, () => rec);
  const layout = stackRows(f, rec, sequences);
  recordEmbedding(ctx, rec, { ids: s.ids, table: f.w.embed, out: s.x, tokens: layout.total });
  for (let l = 0; l < c.layers; l++) recordBatchLayer(rec, f, sequences, layout, l);
  const hidden = c.hiddenSize;
  const lastRows = ctx.scratch('batch last rows', sequences.length * hidden * 4, rec);
  sequences.forEach((seq, i) =>
    rec.copy(s.x, (layout.firsts[i]! + seq.tokens.length - 1) * hidden * 4, lastRows, i * hidden * 4, hidden * 4),
  );
  recordRmsNorm(ctx, rec, { x: lastRows, weight: f.w.finalNorm, out: s.h, rows: sequences.length, n: hidden, eps: c.rmsNormEps });
  recordMatmul(ctx, rec, { x: s.h, w: f.w.lmHead, y: s.logits, m: sequences.length });
  const index = rec.readback(s.logits, 0, sequences.length * c.vocabSize * 4);
  return rec.submit().then((results) => {
    const logits = new Float32Array(results[index]!);
    return sequences.map((_, i) => logits.slice(i * c.vocabSize, (i + 1) * c.vocabSize));
  });
}

/**
 * Stacks the sequences, those that attend together first, and writes the stacked token ids and row positions
 * (before `rec` is submitted, so they land before it runs).
 */
function stackRows(f: ModelParts, rec: Recorder, sequences: readonly GpuBatchSequence[]): Layout {
  const { ctx, s, config: c } = f;
  const shape: RaggedShape = { heads: c.heads, kvHeads: c.kvHeads, headDim: c.headDim, window: c.slidingWindow };
  let inRagged = sequences.map((seq) => raggedFits(shape, seq.tokens.length));
  if (inRagged.filter(Boolean).length < 2) inRagged = inRagged.map(() => false);
  const order = [...sequences.keys()].sort((a, b) => Number(inRagged[b]) - Number(inRagged[a]));
  const total = sequences.reduce((sum, seq) => sum + seq.tokens.length, 0);
  const ids = new Uint32Array(total);
  const rowPositions = new Uint32Array(total);
  const firsts: number[] = new Array(sequences.length);
  let at = 0;
  for (const i of order) {
    const seq = sequences[i]!;
    ids.set(seq.tokens, at);
    for (let t = 0; t < seq.tokens.length; t++) rowPositions[at + t] = seq.position + t;
    firsts[i] = at;
    at += seq.tokens.length;
  }
  s.ensure(total, sequences.length);
  const positions = ctx.scratch('batch positions', total * 4, rec);
  ctx.device.queue.writeBuffer(s.ids, 0, ids);
  ctx.device.queue.writeBuffer(positions, 0, rowPositions);
  const together = order
    .filter((i) => inRagged[i])
    .map((i) => ({ row: firsts[i]!, tokens: sequences[i]!.tokens.length, position: sequences[i]!.position, cache: sequences[i]!.cache }));
  const ragged = together.length > 0 ? new RaggedAttention(ctx, rec, shape, together, c.layers) : null;
  return { firsts, total, positions, ragged, inRagged };
}

/** Decoder layer `l` over the stacked rows, each sequence's K/V into its own cache and attention over it. */
function recordBatchLayer(rec: Recorder, f: ModelParts, sequences: readonly GpuBatchSequence[], layout: Layout, l: number): void {
  const { ctx, s, config: c } = f;
  const { q, k } = recordProjections(rec, f, layout.total, l);
  const rows = { invFreq: f.w.invFreq, tokens: layout.total, headDim: c.headDim, posBase: 0, slots: layout.positions };
  recordRope(ctx, rec, { x: q, heads: c.heads, ...rows });
  recordRope(ctx, rec, { x: k, heads: c.kvHeads, ...rows });
  const kvBytes = c.kvHeads * c.headDim * 4;
  // The copies first, then every attention dispatch: one compute pass for them all.
  sequences.forEach((seq, i) => {
    const [from, to, bytes] = [layout.firsts[i]! * kvBytes, seq.position * kvBytes, seq.tokens.length * kvBytes];
    const [keys, values] = [seq.cache.keys[l]!, seq.cache.values[l]!];
    rec.copy(k, from, keys.buffer, keys.offset + to, bytes);
    rec.copy(s.v, from, values.buffer, values.offset + to, bytes);
  });
  layout.ragged?.record(rec, l, q, s.attn);
  sequences.forEach((seq, i) => {
    if (!layout.inRagged[i]) recordSequenceAttention(rec, f, { seq, first: layout.firsts[i]!, l, q });
  });
  recordOutputAndMlp(rec, f, layout.total, l);
}

interface SequenceStep {
  seq: GpuBatchSequence;
  /** Row of the sequence's first token in the stacked rows. */
  first: number;
  l: number;
  /** The stacked rows' queries after RoPE. */
  q: GPUBuffer;
}

/**
 * One sequence's attention over its cache at layer l, from its rows of the stacked queries into its rows of s.attn:
 * bound in place where their offset is aligned for a binding, else staged through scratch by copies.
 */
function recordSequenceAttention(rec: Recorder, f: ModelParts, step: SequenceStep): void {
  const { ctx, s, config: c } = f;
  const { seq, first, l } = step;
  const n = seq.tokens.length;
  const qBytes = c.heads * c.headDim * 4;
  const range = (buffer: GPUBuffer): BufferRange => ({ buffer, offset: first * qBytes, size: n * qBytes });
  const args = {
    cacheK: seq.cache.keys[l]!,
    cacheV: seq.cache.values[l]!,
    tokens: n,
    heads: c.heads,
    kvHeads: c.kvHeads,
    headDim: c.headDim,
    posBase: seq.position,
    window: c.slidingWindow,
  };
  if ((first * qBytes) % ctx.storageOffsetAlignment === 0) {
    recordAttention(ctx, rec, { q: range(step.q), out: range(s.attn), ...args });
    return;
  }
  const stagedQ = ctx.scratch('batch q', n * qBytes, rec);
  const stagedOut = ctx.scratch('batch attn', n * qBytes, rec);
  rec.copy(step.q, first * qBytes, stagedQ, 0, n * qBytes);
  recordAttention(ctx, rec, { q: stagedQ, out: stagedOut, ...args });
  rec.copy(stagedOut, 0, s.attn, first * qBytes, n * qBytes);
}
