import type { ModelConfig } from '../../model/config.ts';

/**
 * Rotary position embeddings in Hugging Face's rotate_half convention: within each head, element i pairs with
 * element i + headDim/2 and the pair is rotated by angle position * invFreq[i].
 *
 * Like HF, inverse frequencies and angles are float32 values (the angle is the float32 product of position and
 * frequency) so logits match transformers bit-for-bit as closely as float32 allows.
 */

/** Inverse frequencies [headDim / 2] from rope_theta, with llama3 frequency scaling when configured. */
export function ropeInvFreq(config: Pick<ModelConfig, 'headDim' | 'ropeTheta' | 'ropeScaling'>): Float32Array {
  const half = config.headDim / 2;
  const invFreq = new Float32Array(half);
  for (let i = 0; i < half; i++) {
    invFreq[i] = 1 / Math.fround(config.ropeTheta ** Math.fround((2 * i) / config.headDim));
  }
  const s = config.ropeScaling;
  if (s === null) return invFreq;
  // transformers' _compute_llama3_parameters: long wavelengths are slowed by `factor`, short ones kept, and the
  // band between is interpolated smoothly.
  const lowFreqWavelen = s.originalMaxPositionEmbeddings / s.lowFreqFactor;
  const highFreqWavelen = s.originalMaxPositionEmbeddings / s.highFreqFactor;
  for (let i = 0; i < half; i++) {
    const f = invFreq[i]!;
    const wavelen = (2 * Math.PI) / f;
    if (wavelen > lowFreqWavelen) {
      invFreq[i] = f / s.factor;
    } else if (wavelen >= highFreqWavelen) {
      const smooth = (s.originalMaxPositionEmbeddings / wavelen - s.lowFreqFactor) / (s.highFreqFactor - s.lowFreqFactor);
      invFreq[i] = (1 - smooth) * (f / s.factor) + smooth * f;
    }
  }
  return invFreq;
}

/**
 * Rotates every head of x at per-token positions: out[t][h] = rope(x[t][h], positions[t]).
 * Shapes: x and out [tokens][heads][headDim], positions [tokens] (any real numbers, negative included),
 * invFreq [headDim / 2]. `out` may be `x`.
 */
export function applyRope(
  out: Float32Array,
  x: Float32Array,
  tokens: number,
  heads: number,
  headDim: number,
  positions: ArrayLike<number>,
  invFreq: Float32Array,
): void {
  const half = headDim / 2;
  const cos = new Float64Array(half);
  const sin = new Float64Array(half);
  for (let t = 0; t < tokens; t++) {
    const pos = Math.fround(positions[t]!);
    for (let i = 0; i < half; i++) {
      const angle = Math.fround(pos * invFreq[i]!);
      cos[i] = Math.cos(angle);
      sin[i] = Math.sin(angle);
    }
    for (let h = 0; h < heads; h++) {
      const base = (t * heads + h) * headDim;
      for (let i = 0; i < half; i++) {
        const a = x[base + i]!;
        const b = x[base + i + half]!;
        out[base + i] = a * cos[i]! - b * sin[i]!;
        out[base + i + half] = b * cos[i]! + a * sin[i]!;
      }
    }
  }
}

/**
 * Moves keys that were rotated at position p to position p + delta (rotation angles add), for every token.
 * Shapes as applyRope. `out` may be `x`.
 */
export function rerotate(
  out: Float32Array,
  x: Float32Array,
  tokens: number,
  heads: number,
  headDim: number,
  delta: number,
  invFreq: Float32Array,
): void {
  applyRope(out, x, tokens, heads, headDim, new Float64Array(tokens).fill(delta), invFreq);
}
