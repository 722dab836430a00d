// y[r][n] = x[r][k] . W[n][k]^T (+ bias[n]) for few rows (decode): 32 threads per output reduce over k, 8 outputs
// per workgroup, one workgroup row per x row. With F16_WEIGHTS each thread reads packed f16 pairs, with W_BLOCKS from
// the blocks layout (k a multiple of 32).
#include "matmul-common.wgsl"
#if W_BLOCKS
#include "weight-blocks.wgsl"
#endif
@group(0) @binding(1) var<storage, read> x: array<f32>;
#if F16_WEIGHTS
@group(0) @binding(2) var<storage, read> w: array<u32>;
#else
@group(0) @binding(2) var<storage, read> w: array<f32>;
#endif
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;

var<workgroup> partial: array<f32, 256>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let lane = lid % 32u;
  let slot = lid / 32u;
  let col = (wid.x + wid.z * nwg.x) * 8u + slot;
  let row = wid.y;
  let xb = row * p.k;
  var sum = 0.0;
  if (col < p.n) {
#if F16_WEIGHTS
    let wb = col * p.rowWords;
    let pairs = p.k / 2u;
    for (var i = lane; i < pairs; i += 32u) {
#if W_BLOCKS
      let wv = unpack2x16float(w[blockWord(col, i, p.rowWords)]);
#else
      let wv = unpack2x16float(w[wb + i]);
#endif
      sum = fma(x[xb + 2u * i], wv.x, sum);
      sum = fma(x[xb + 2u * i + 1u], wv.y, sum);
    }
    if ((p.k & 1u) == 1u && lane == 0u) {
      sum = fma(x[xb + p.k - 1u], unpack2x16float(w[wb + pairs]).x, sum);
    }
#else
    let wb = col * p.k;
    for (var i = lane; i < p.k; i += 32u) {
      sum = fma(x[xb + i], w[wb + i], sum);
    }
#endif
  }
  partial[lid] = sum;
  workgroupBarrier();
  for (var stride = 16u; stride > 0u; stride >>= 1u) {
    if (lane < stride) { partial[lid] += partial[lid + stride]; }
    workgroupBarrier();
  }
  if (lane == 0u && col < p.n) {
    var v = partial[lid];
    if (p.hasBias != 0u) { v += bias[col]; }
    store(row * p.n + col, v);
  }
}
