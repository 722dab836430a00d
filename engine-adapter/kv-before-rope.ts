import { KdnError } from '../common/errors.ts';
import type { KVTensors } from '../storage/kv-object/types.ts';
import { applyRope, ropeInvFreq } from './cpu/kernels/rope.ts';
import type { ModelConfig } from './model/config.ts';

/**
 * Exported KV with its keys rotated back to before RoPE (ropeApplied: false), on the CPU, with the model's own
 * inverse frequencies (Llama 3 scaling included). Codecs that decorrelate keys across dimensions need this:
 * RoPE mixes each key's position into every pair of dimensions. Rotation is orthogonal, so undoing it loses
 * nothing but float32 rounding. The input is not modified; already unrotated KV is returned as is.
 */
export function kvBeforeRope(tensors: KVTensors, config: Pick<ModelConfig, 'headDim' | 'ropeTheta' | 'ropeScaling'>): KVTensors {
  if (!tensors.ropeApplied) return tensors;
  if (tensors.headDim !== config.headDim) {
    throw new KdnError('KV_MISMATCH', `KV has headDim ${tensors.headDim}, the model ${config.headDim}`);
  }
  const invFreq = ropeInvFreq(config);
  const positions = new Float64Array(tensors.tokens);
  for (let t = 0; t < tensors.tokens; t++) positions[t] = -(tensors.positionBase + t);
  const perLayer = tensors.perLayer.map((layer) => {
    const keys = new Float32Array(layer.keys.length);
    applyRope(keys, layer.keys, tensors.tokens, tensors.kvHeads, tensors.headDim, positions, invFreq);
    return { keys, values: layer.values };
  });
  return { ...tensors, ropeApplied: false, perLayer };
}
