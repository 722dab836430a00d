/**
 * Which context tokens a blended prefill recomputes (Session.blendKVAndPrefill). Chunks computed alone never
 * attended to each other; recomputing a few of their tokens over the composed context restores most of what that
 * cross-attention carries. Five ways to pick them, compared in bench/fidelity.ts:
 *   deviation   CacheBlend (arXiv 2405.16444): every token runs the first layers, and the tokens whose K/V at the
 *               check layer moved most from the injected K/V go on through the rest;
 *   attended    CacheBlend's deviation weighted by the square root of the attention the prompt's last tokens pay each
 *               token at the check layer: a token that moved but that the prompt does not read matters less;
 *   chunk-start EPIC (arXiv 2410.15332): each chunk's first tokens, where a chunk computed alone piled the attention
 *               it had nowhere else to put;
 *   combined    half of the budget to chunk starts, the rest by deviation;
 *   gradual     CacheBlend's gradual filtering with the attended score: more rows at the check layer, fewer at each
 *               layer after it, each layer keeping the best-scored of the rows still running by that layer's own
 *               signals; the ratio is the share per layer averaged over those layers (gradualShares).
 */
import { KdnError } from '../common/errors.ts';
import type { BlendPlan, BlendSignals } from './backend.ts';
import type { BlendSelection } from './types.ts';

export const BLEND_SELECTIONS: readonly BlendSelection[] = ['attended', 'gradual', 'deviation', 'chunk-start', 'combined'];

/** The prompt's last tokens whose attention weighs the context for 'attended' (bounds the signal's cost). */
export const MASS_ROWS = 64;

/**
 * How far gradual's share at the check layer lies above the ratio (and at the last layer below it), as a fraction
 * of the ratio: a steeper, front-loaded shape measured worse on the document set of kdn-demo,
 * the language model shipped before kdn-reader (docs/BLEND.md).
 */
export const GRADUAL_TILT = 0.6;

/** Where the context's chunks begin in the blended rows, and how many rows follow the context (the prompt). */
export interface BlendLayout {
  /** Row index of each chunk's first token, ascending from 0. */
  chunkStarts: readonly number[];
  contextRows: number;
  promptRows: number;
}

/**
 * The layer whose deviation picks the tokens. Layer 0's K/V depend on the token and its position alone, so they
 * match the injected K/V; layer 1 is the first whose input carries the missing cross-chunk attention.
 */
export function checkLayerFor(layers: number): number {
  return Math.min(1, layers - 1);
}

/** The context tokens a ratio in [0, 1] recomputes. */
export function blendBudget(ratio: number, contextRows: number): number {
  if (!(ratio >= 0 && ratio <= 1)) {
    throw new KdnError('INVALID_ARGUMENT', `blend ratio ${ratio} is outside [0, 1]`, {
      hint: 'pass the fraction of context tokens to recompute, e.g. 0.15',
    });
  }
  return Math.round(ratio * contextRows);
}

/**
 * Gradual's share of the context at each of `count` layers from the check layer: falling linearly from
 * (1 + tilt) to (1 - tilt) times the ratio, so their mean is the ratio (the tilt shrinks where the first would pass 1).
 */
export function gradualShares(ratio: number, count: number): number[] {
  const tilt = count > 1 ? Math.min(GRADUAL_TILT, (1 - ratio) / ratio) : 0;
  return Array.from({ length: count }, (_, i) => ratio * (1 + tilt * (count > 1 ? 1 - (2 * i) / (count - 1) : 0)));
}

/** The plan for a backend's blendForward: the selection's rows plus every prompt row. */
export function blendPlan(selection: BlendSelection, ratio: number, layout: BlendLayout, layers: number): BlendPlan {
  const budget = blendBudget(ratio, layout.contextRows);
  const finish = (context: Iterable<number>): Uint32Array => {
    const sorted = [...context].sort((a, b) => a - b);
    const rows = new Uint32Array(sorted.length + layout.promptRows);
    rows.set(sorted);
    for (let i = 0; i < layout.promptRows; i++) rows[sorted.length + i] = layout.contextRows + i;
    return rows;
  };
  if (selection === 'chunk-start')
    return { checkLayer: null, massRows: 0, narrows: false, select: () => finish(chunkStartRows(layout, budget)) };
  const check = checkLayerFor(layers);
  const shares = selection === 'gradual' ? gradualShares(ratio, layers - check) : null;
  const startBudget = selection === 'combined' ? Math.floor(budget / 2) : 0;
  return {
    checkLayer: check,
    massRows: selection === 'attended' || selection === 'gradual' ? Math.min(MASS_ROWS, layout.promptRows) : 0,
    narrows: shares !== null,
    select: (signals, layer, candidates) => {
      if (!signals) throw new KdnError('INTERNAL', `the ${selection} blend selection needs the check layer's signals`);
      const wanted = shares ? Math.round(shares[layer - check]! * layout.contextRows) : budget;
      const picked = chunkStartRows(layout, startBudget);
      const free = [...candidates].filter((r) => r < layout.contextRows && !picked.has(r));
      return finish([...picked, ...topRows(score(selection, signals), free, wanted - picked.size)]);
    },
  };
}

/**
 * Where each of `rows` (ascending) sits in `candidates` (ascending), or null if one is not there: a plan selects
 * among the rows still running, and a backend gathers the kept rows' state by these indices.
 */
export function indicesIn(candidates: Uint32Array, rows: Uint32Array): Uint32Array | null {
  const out = new Uint32Array(rows.length);
  let i = 0;
  for (const [j, r] of rows.entries()) {
    while (i < candidates.length && candidates[i]! < r) i++;
    if (candidates[i] !== r) return null;
    out[j] = i;
  }
  return out;
}

/** Each row's claim to be recomputed under `selection`. */
function score(selection: BlendSelection, signals: BlendSignals): Float32Array {
  const { deviation, mass } = signals;
  if (selection !== 'attended' && selection !== 'gradual') return deviation;
  if (!mass) throw new KdnError('INTERNAL', `the ${selection} blend selection needs the prompt's attention`);
  return deviation.map((d, r) => d * Math.sqrt(mass[r]!));
}

/**
 * `budget` rows spread evenly over the chunks, each chunk's from its first token on: round by round, one more token
 * of every chunk that has one left (so a short chunk's unused share goes to the others).
 */
function chunkStartRows(layout: BlendLayout, budget: number): Set<number> {
  const out = new Set<number>();
  const starts = layout.chunkStarts;
  const ends = starts.map((_, c) => (c + 1 < starts.length ? starts[c + 1]! : layout.contextRows));
  const room = ends.reduce((n, end, c) => n + Math.max(0, end - starts[c]!), 0);
  let left = Math.min(budget, room);
  for (let depth = 0; left > 0; depth++) {
    for (let c = 0; c < starts.length && left > 0; c++) {
      if (starts[c]! + depth >= ends[c]!) continue;
      out.add(starts[c]! + depth);
      left--;
    }
  }
  return out;
}

/** The `count` rows of `free` (ascending) of largest score (ties to the earlier row). */
function topRows(score: Float32Array, free: number[], count: number): number[] {
  if (count <= 0) return [];
  if (count >= free.length) return free;
  // The count-th largest score by a native numeric sort (no comparator: fast at 32k rows), then the rows above it
  // and as many at it as are still wanted.
  const threshold = Float32Array.from(free, (r) => score[r]!).sort()[free.length - count]!;
  const above = free.filter((r) => score[r]! > threshold);
  const at = free.filter((r) => score[r] === threshold);
  return [...above, ...at.slice(0, count - above.length)];
}
