// How much a few query rows attend to each key (see attention-mass.ts): out[r] for the key at position + r is the
// sum over the rows and heads of its softmax probability, with the normalisers from attention-mass-stats.wgsl,
// divided by rows * heads. One thread per key.
@group(0) @binding(1) var<storage, read> q: array<f32>;
@group(0) @binding(2) var<storage, read> kc: array<f32>;
@group(0) @binding(3) var<storage, read> stats: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;
#include "attention-mass-common.wgsl"

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let r = (wid.y * nwg.x + wid.x) * 256u + lid;
  if (r >= p.keys) { return; }
  let j = p.position + r;
  var acc = 0.0;
  for (var t = 0u; t < p.rows; t++) {
    let pos = p.posBase + t;
    if (j > pos || j < key_start(pos)) { continue; }
    for (var h = 0u; h < p.heads; h++) {
      let pair = (t * p.heads + h) * 2u;
      acc += exp(score(t, h, j) - stats[pair]) / stats[pair + 1u];
    }
  }
  out[r] = acc / f32(p.rows * p.heads);
}
