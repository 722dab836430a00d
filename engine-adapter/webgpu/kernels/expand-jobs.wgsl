// The expansion kernels (KV dequantization, re-rotation) take up to MAX_JOBS jobs per dispatch in their uniforms,
// one per workgroup z: the blocks of one layer from several chunks then cost one dispatch, not one each.
const MAX_JOBS = 60u;
