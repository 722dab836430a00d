/**
 * A forward pass over several sequences, each on its own KV cache, recorded into one submission: the rows of every
 * sequence are stacked in the shared scratch for the norms, projections and MLP (each weight read once per step for
 * all of them), while each sequence's rows are copied out for RoPE at its positions, the K/V write into its cache
 * and attention over that cache, and their attention output copied back. The same decoder as record-forward.ts,
 * built from its pieces and the same kernels.
 */
import type { Recorder } from './gpu-context.ts';
import type { GpuKVCache } from './gpu-kv-cache.ts';
import { recordAttention } from './kernels/attention.ts';
import { recordEmbedding } from './kernels/embedding.ts';
import { recordKvWrite } from './kernels/kv-write.ts';
import { recordMatmul } from './kernels/matmul.ts';
import { recordRmsNorm } from './kernels/rmsnorm.ts';
import { recordRope } from './kernels/rope.ts';
import { recordOutputAndMlp, recordProjections, type ModelParts } from './record-forward.ts';
import type { BatchSequence } from '../backend.ts';

export type GpuBatchSequence = BatchSequence<GpuKVCache>;

/** Per-sequence staging of one layer's rows: the rows' q, k, v and attention output. */
interface SequenceBuffers {
  q: GPUBuffer;
  k: GPUBuffer;
  v: GPUBuffer;
  attn: GPUBuffer;
}

/**
 * Records and submits the sequences' forward (synchronously, so a caller's error scopes cover exactly it); the
 * returned promise resolves with each sequence's last-row logits.
 */
export function gpuBatchForward(f: ModelParts, sequences: readonly GpuBatchSequence[]): Promise<Float32Array[]> {
  const { ctx, s, config: c } = f;
  const total = sequences.reduce((sum, seq) => sum + seq.tokens.length, 0);
  const longest = Math.max(...sequences.map((seq) => seq.tokens.length));
  const ids = new Uint32Array(total);
  const firsts: number[] = [];
  let at = 0;
  for (const seq of sequences) {
    ids.set(seq.tokens, at);
    firsts.push(at);
    at += seq.tokens.length;
  }
  const rec = ctx.recorder();
  for (const seq of sequences) seq.cache.reserve(seq.position + seq.tokens.length, () => rec);
  s.ensure(total, sequences.length);
  ctx.device.queue.writeBuffer(s.ids, 0, ids);
  const qBytes = c.heads * c.headDim * 4;
  const kvBytes = c.kvHeads * c.headDim * 4;
  const staged: SequenceBuffers = {
    q: ctx.scratch('batch q', longest * qBytes, rec),
    k: ctx.scratch('batch k', longest * kvBytes, rec),
    v: ctx.scratch('batch v', longest * kvBytes, rec),
    attn: ctx.scratch('batch attn', longest * qBytes, rec),
  };
  recordEmbedding(ctx, rec, { ids: s.ids, table: f.w.embed, out: s.x, tokens: total });
  for (let l = 0; l < c.layers; l++) {
    const { q, k } = recordProjections(rec, f, total, l);
    sequences.forEach((seq, i) => recordSequenceAttention(rec, f, { seq, first: firsts[i]!, l, q, k, staged }));
    recordOutputAndMlp(rec, f, total, l);
  }
  const hidden = c.hiddenSize;
  const lastRows = ctx.scratch('batch last rows', sequences.length * hidden * 4, rec);
  sequences.forEach((seq, i) => rec.copy(s.x, (firsts[i]! + seq.tokens.length - 1) * hidden * 4, lastRows, i * hidden * 4, hidden * 4));
  recordRmsNorm(ctx, rec, { x: lastRows, weight: f.w.finalNorm, out: s.h, rows: sequences.length, n: hidden, eps: c.rmsNormEps });
  recordMatmul(ctx, rec, { x: s.h, w: f.w.lmHead, y: s.logits, m: sequences.length });
  const index = rec.readback(s.logits, 0, sequences.length * c.vocabSize * 4);
  return rec.submit().then((results) => {
    const logits = new Float32Array(results[index]!);
    return sequences.map((_, i) => logits.slice(i * c.vocabSize, (i + 1) * c.vocabSize));
  });
}

interface SequenceStep {
  seq: GpuBatchSequence;
  /** Row of the sequence's first token in the stacked rows. */
  first: number;
  l: number;
  /** The stacked rows' queries and keys before RoPE (values are in s.v). */
  q: GPUBuffer;
  k: GPUBuffer;
  staged: SequenceBuffers;
}

/** One sequence's part of layer l: its rows rotated at its positions, their K/V into its cache, its attention. */
function recordSequenceAttention(rec: Recorder, f: ModelParts, step: SequenceStep): void {
  const { ctx, s, config: c } = f;
  const { seq, first, l, staged } = step;
  const n = seq.tokens.length;
  const qBytes = c.heads * c.headDim * 4;
  const kvDim = c.kvHeads * c.headDim;
  rec.copy(step.q, first * qBytes, staged.q, 0, n * qBytes);
  rec.copy(step.k, first * kvDim * 4, staged.k, 0, n * kvDim * 4);
  rec.copy(s.v, first * kvDim * 4, staged.v, 0, n * kvDim * 4);
  const cacheK = seq.cache.keys[l]!;
  const cacheV = seq.cache.values[l]!;
  const posBase = seq.position;
  recordRope(ctx, rec, { x: staged.q, invFreq: f.w.invFreq, tokens: n, heads: c.heads, headDim: c.headDim, posBase });
  recordRope(ctx, rec, { x: staged.k, invFreq: f.w.invFreq, tokens: n, heads: c.kvHeads, headDim: c.headDim, posBase });
  recordKvWrite(ctx, rec, { k: staged.k, v: staged.v, cacheK, cacheV, tokens: n, rowSize: kvDim, position: posBase });
  const heads = { heads: c.heads, kvHeads: c.kvHeads, headDim: c.headDim };
  recordAttention(ctx, rec, { q: staged.q, cacheK, cacheV, out: staged.attn, tokens: n, ...heads, posBase, window: c.slidingWindow });
  rec.copy(staged.attn, 0, s.attn, first * qBytes, n * qBytes);
}
