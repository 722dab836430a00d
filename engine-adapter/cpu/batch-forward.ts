import type { ModelWeights } from '../model/weights.ts';
import { embedding } from './kernels/embedding.ts';
import { attendRows, cpuLogits, gatherRows, LayerScratch, outputAndMlp, projectQKV, writeRowsKV, type Rows } from './forward.ts';
import type { CpuKVCache } from './kv-cache.ts';
import type { BatchSequence } from '../backend.ts';

/** One sequence of a batched forward on the CPU: its cache, the tokens it appends and where they start. */
export type CpuBatchSequence = BatchSequence<CpuKVCache>;

/**
 * One forward pass over several sequences, each on its own cache: their rows are stacked into one residual stream
 * for the norms, projections and MLP, while each sequence's K/V goes to its own cache and its rows attend to that
 * cache alone. The same decoder as cpuForward; returns each sequence's last-row logits.
 */
export function cpuBatchForward(weights: ModelWeights, invFreq: Float32Array, sequences: readonly CpuBatchSequence[]): Float32Array[] {
  const c = weights.config;
  const rows = stackRows(weights, sequences);
  const firsts: number[] = [];
  let at = 0;
  for (const seq of sequences) {
    seq.cache.reserve(seq.position + seq.tokens.length);
    firsts.push(at);
    at += seq.tokens.length;
  }
  const scratch = new LayerScratch(weights, rows.n);
  for (let l = 0; l < c.layers; l++) {
    projectQKV(weights, invFreq, l, rows, scratch);
    sequences.forEach((seq, i) => {
      writeRowsKV(weights, seq.cache, l, rows, scratch, firsts[i]!, seq.tokens.length);
      attendRows(weights, seq.cache, l, rows, scratch, firsts[i]!, seq.tokens.length);
    });
    outputAndMlp(weights, l, rows, scratch);
  }
  const lasts = Uint32Array.from(sequences, (seq, i) => firsts[i]! + seq.tokens.length - 1);
  const logits = cpuLogits(weights, gatherRows(rows, lasts, c.hiddenSize), 'all');
  return sequences.map((_, i) => logits.slice(i * c.vocabSize, (i + 1) * c.vocabSize));
}

/** Every sequence's embedded tokens one after another, each row at its own sequence's slot. */
function stackRows(weights: ModelWeights, sequences: readonly CpuBatchSequence[]): Rows {
  const n = sequences.reduce((sum, seq) => sum + seq.tokens.length, 0);
  const tokens = new Uint32Array(n);
  const slots = new Float64Array(n);
  let at = 0;
  for (const seq of sequences) {
    tokens.set(seq.tokens, at);
    for (let t = 0; t < seq.tokens.length; t++) slots[at + t] = seq.position + t;
    at += seq.tokens.length;
  }
  const x = new Float32Array(n * weights.config.hiddenSize);
  embedding(x, weights.embed.data, weights.config.hiddenSize, tokens);
  return { x, n, slots, ropePositions: slots };
}
