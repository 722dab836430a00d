/**
 * How a blended query recomputes its context when the request does not say: the selection and share of context
 * tokens that measured best against a full prefill of the same composed text (bench/results/fidelity.json, blend
 * rows of the composed set; docs/BLEND.md says why).
 */
import type { BlendOptions } from '../../engine-adapter/types.ts';

export const DEFAULT_BLEND: BlendOptions = { ratio: 0.15, selection: 'gradual' };

/** The blend options of a request that may name its own ratio. */
export function blendOptions(ratio: number | undefined): BlendOptions {
  return { ...DEFAULT_BLEND, ...(ratio === undefined ? {} : { ratio }) };
}
