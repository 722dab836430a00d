// The second step of a split-K product that is added to the residual stream and normed at once (the output
// projection and the post-attention norm, matmul-add-norm.ts): x[r] += the sum over the K parts of part[s][r] (part 0
// holds the bias), then out[r] = x[r] / sqrt(mean(x[r]^2) + eps) * w. One workgroup per row, as rmsnorm.wgsl; the
// parts are summed first and then added, as matmul-split-reduce.wgsl's INTO_ADD store does.
struct Params { rows: u32, n: u32, parts: u32, eps: f32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> part: array<f32>;
@group(0) @binding(2) var<storage, read_write> x: array<f32>;
@group(0) @binding(3) var<storage, read> w: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

#include "row-sum.wgsl"

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let row = wid.y * nwg.x + wid.x;
  if (row >= p.rows) { return; }
  let base = row * p.n;
  let count = p.rows * p.n;
  var sum = 0.0;
  for (var c = lid; c < p.n; c += 256u) {
    var product = 0.0;
    for (var s = 0u; s < p.parts; s++) { product += part[s * count + base + c]; }
    let v = x[base + c] + product;
    x[base + c] = v;
    sum += v * v;
  }
  let inv = inverseSqrt(rowSum(lid, sum) / f32(p.n) + p.eps);
  for (var c = lid; c < p.n; c += 256u) {
    out[base + c] = x[base + c] * inv * w[c];
  }
}
