// The uniforms of every matmul kernel (matmulParams in matmul-split.ts): y[m][n] = x[m][k] . W[n][k]^T, W rows of
// rowWords words, a bias when hasBias, and the K range each split-K part sums (kPer; the whole of k without a split).
// A finished product meets what y holds as matmul-into.wgsl's store says.
struct Params { m: u32, n: u32, k: u32, rowWords: u32, hasBias: u32, kPer: u32 }
@group(0) @binding(0) var<uniform> p: Params;

#include "matmul-into.wgsl"
