/**
 * How a blended query recomputes its context when the request does not say: the selection and share of context
 * tokens that measured best against a full prefill of the same composed text for their time to first token
 * (docs/BLEND.md: `gradual` agrees a little better but takes 3-5x the time on the GPU).
 */
import type { BlendOptions } from '../../engine-adapter/types.ts';

export const DEFAULT_BLEND: BlendOptions = { ratio: 0.15, selection: 'attended' };

/** The blend options of a request that may name its own ratio. */
export function blendOptions(ratio: number | undefined): BlendOptions {
  return { ...DEFAULT_BLEND, ...(ratio === undefined ? {} : { ratio }) };
}
