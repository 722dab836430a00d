// out[r][:] = x[r][:] / sqrt(mean(x[r]^2) + eps) * w; one workgroup per row. Qwen3's per-head q/k norm is the
// same operation over rows of headDim.
struct Params { rows: u32, n: u32, eps: f32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

#include "row-sum.wgsl"

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let row = wid.y * nwg.x + wid.x;
  if (row >= p.rows) { return; }
  let base = row * p.n;
  var sum = 0.0;
  for (var c = lid; c < p.n; c += 256u) {
    let v = x[base + c];
    sum += v * v;
  }
  let inv = inverseSqrt(rowSum(lid, sum) / f32(p.n) + p.eps);
  for (var c = lid; c < p.n; c += 256u) {
    out[base + c] = x[base + c] * inv * w[c];
  }
}
