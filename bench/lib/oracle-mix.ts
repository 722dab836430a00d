import { KdnError } from '../../common/errors.ts';
import type { KVLayerTensors, KVTensors } from '../../storage/kv-object/types.ts';

/**
 * Blend's ceiling, for the fidelity benchmark's `oracle` mode: the context's independent chunk KV with a `ratio` share
 * of its tokens given the full prefill's own KV, chosen by how far each token's KV is from it. No selective recompute
 * can place better rows than the exact ones, so with the same share it can only match this if it picks as well.
 *   per-layer: in every layer its own most deviating tokens (more freedom than any recompute has: recomputing a token
 *              at one layer changes what every later layer sees);
 *   per-token: one set of tokens for every layer, ranked by their deviation summed over layers (what CacheBlend
 *              recomputes: the same tokens through the remaining layers).
 * A token's deviation in a layer: its key and value errors, each squared and divided by the layer's mean squared key
 * or value norm, so that neither dominates by scale. Both inputs must be before RoPE (kvBeforeRope).
 */
export const ORACLE_SELECTIONS = ['per-layer', 'per-token'] as const;
export type OracleSelection = (typeof ORACLE_SELECTIONS)[number];

/**
 * One context's independent and exact chunks, ranked once; mix() then costs only the copies, whatever the share
 * and selection asked for.
 */
export class OracleMixer {
  private readonly width: number;
  /** Context token indices by decreasing deviation: per layer, and for the deviation summed over layers. */
  private readonly layerOrders: number[][];
  private readonly tokenOrder: number[];

  constructor(
    private readonly independent: readonly KVTensors[],
    private readonly exact: readonly KVTensors[],
  ) {
    checkPairs(independent, exact);
    this.width = independent[0]!.kvHeads * independent[0]!.headDim;
    const total = independent.reduce((n, c) => n + c.tokens, 0);
    const deviations = Array.from({ length: independent[0]!.layers }, (_, l) =>
      layerDeviation(
        independent.map((c) => c.perLayer[l]!),
        exact.map((c) => c.perLayer[l]!),
        this.width,
      ),
    );
    const summed = new Float64Array(total);
    for (const d of deviations) for (let t = 0; t < total; t++) summed[t]! += d[t]!;
    this.layerOrders = deviations.map(byDecreasing);
    this.tokenOrder = byDecreasing(summed);
  }

  /** The mixed chunks (independent's headers) and how many tokens took exact rows, per layer. */
  mix(ratio: number, selection: OracleSelection): { chunks: KVTensors[]; replaced: number } {
    const replaced = Math.round(ratio * this.tokenOrder.length);
    const chosen = this.layerOrders.map((order) => firstOf(selection === 'per-layer' ? order : this.tokenOrder, replaced));
    let first = 0;
    const chunks = this.independent.map((c, i) => {
      const perLayer = c.perLayer.map((own, l) => {
        const rows = { keys: own.keys.slice(), values: own.values.slice() };
        const source = this.exact[i]!.perLayer[l]!;
        for (let t = 0; t < c.tokens; t++) if (chosen[l]![first + t]) copyRow(rows, source, t, this.width);
        return rows;
      });
      first += c.tokens;
      return { ...c, perLayer };
    });
    return { chunks, replaced };
  }
}

function checkPairs(independent: readonly KVTensors[], exact: readonly KVTensors[]): void {
  const mismatch =
    independent.length !== exact.length ||
    independent.some((c, i) => {
      const e = exact[i]!;
      return (
        c.ropeApplied || e.ropeApplied || c.tokens !== e.tokens || c.layers !== e.layers || c.kvHeads * c.headDim !== e.kvHeads * e.headDim
      );
    });
  if (independent.length === 0 || mismatch) {
    throw new KdnError('INVALID_ARGUMENT', 'oracle mixing needs the same chunks, before RoPE, from both prefills');
  }
}

/** Each context token's normalized key and value error in one layer, in context order. */
function layerDeviation(own: readonly KVLayerTensors[], exact: readonly KVLayerTensors[], width: number): Float64Array {
  const tokens = own.reduce((n, c) => n + c.keys.length / width, 0);
  const keyErr = new Float64Array(tokens);
  const valueErr = new Float64Array(tokens);
  let keyNorm = 0;
  let valueNorm = 0;
  let t = 0;
  for (const [i, c] of own.entries()) {
    const e = exact[i]!;
    for (let r = 0; r < c.keys.length / width; r++, t++) {
      for (let j = r * width; j < (r + 1) * width; j++) {
        keyErr[t]! += (c.keys[j]! - e.keys[j]!) ** 2;
        valueErr[t]! += (c.values[j]! - e.values[j]!) ** 2;
        keyNorm += e.keys[j]! ** 2;
        valueNorm += e.values[j]! ** 2;
      }
    }
  }
  const out = new Float64Array(tokens);
  for (let i = 0; i < tokens; i++) out[i] = (keyErr[i]! * tokens) / keyNorm + (valueErr[i]! * tokens) / valueNorm;
  return out;
}

function byDecreasing(score: Float64Array): number[] {
  return Array.from(score.keys()).sort((a, b) => score[b]! - score[a]!);
}

/** A mask over the context's tokens of the first `count` of `order`. */
function firstOf(order: readonly number[], count: number): Uint8Array {
  const chosen = new Uint8Array(order.length);
  for (const t of order.slice(0, count)) chosen[t] = 1;
  return chosen;
}

function copyRow(into: KVLayerTensors, from: KVLayerTensors, token: number, width: number): void {
  const at = token * width;
  into.keys.set(from.keys.subarray(at, at + width), at);
  into.values.set(from.values.subarray(at, at + width), at);
}
