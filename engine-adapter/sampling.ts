import { mulberry32 } from '../common/rng.ts';
import { argmax } from './cpu/kernels/argmax.ts';

export interface SamplerOptions {
  /** <= 0 or absent: greedy (argmax). */
  temperature?: number;
  /** Nucleus sampling: keep the smallest set of most likely tokens whose probability reaches topP. 1 = all. */
  topP?: number;
  /** Same seed, same logits -> same tokens. Absent: a random seed. */
  seed?: number;
}

/** Picks the next token from a logits row: greedy, or temperature + top-p sampling from a seeded RNG. */
export class Sampler {
  private readonly temperature: number;
  private readonly topP: number;
  private readonly random: () => number;

  constructor(options: SamplerOptions = {}) {
    this.temperature = options.temperature ?? 0;
    this.topP = options.topP ?? 1;
    if (!(this.topP > 0 && this.topP <= 1)) throw new RangeError(`topP must be in (0, 1], got ${this.topP}`);
    this.random = mulberry32(options.seed ?? Math.floor(Math.random() * 2 ** 32));
  }

  sample(logits: Float32Array): number {
    if (this.temperature <= 0) return argmax(logits);
    const n = logits.length;
    let max = -Infinity;
    for (let i = 0; i < n; i++) if (logits[i]! > max) max = logits[i]!;
    const probs = new Float64Array(n);
    let sum = 0;
    for (let i = 0; i < n; i++) {
      const p = Math.exp((logits[i]! - max) / this.temperature);
      probs[i] = p;
      sum += p;
    }
    // The nucleus is every token at or above a probability threshold; bisecting on the threshold costs a few
    // linear passes instead of sorting the whole vocabulary each step.
    let threshold = 0;
    if (this.topP < 1) {
      const target = this.topP * sum;
      let lo = 0;
      let hi = 1; // the most likely token has probability exp(0) = 1 before normalizing
      for (let iter = 0; iter < 50; iter++) {
        const mid = (lo + hi) / 2;
        let kept = 0;
        for (let i = 0; i < n; i++) if (probs[i]! >= mid) kept += probs[i]!;
        if (kept >= target) lo = mid;
        else hi = mid;
      }
      threshold = lo;
    }
    let mass = 0;
    for (let i = 0; i < n; i++) if (probs[i]! >= threshold) mass += probs[i]!;
    let r = this.random() * mass;
    let last = 0;
    for (let i = 0; i < n; i++) {
      if (probs[i]! < threshold) continue;
      last = i;
      r -= probs[i]!;
      if (r < 0) return i;
    }
    return last;
  }
}
