// y[i] = the sum over the K parts of part[s][i], met with y as matmul-into.wgsl's store says: the second step of a
// split-K matmul, whose workgroups each summed one range of K into their own part (matmul.wgsl and
// matmul-subgroup-matrix.wgsl with SPLIT_K; part 0 holds the bias).
struct Params { count: u32, parts: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> part: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
#include "matmul-into.wgsl"

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let i = (wid.y * nwg.x + wid.x) * 256u + lid;
  if (i >= p.count) { return; }
  var v = 0.0;
  for (var s = 0u; s < p.parts; s++) { v += part[s * p.count + i]; }
  store(i, v);
}
