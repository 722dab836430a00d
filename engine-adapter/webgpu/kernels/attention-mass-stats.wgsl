// The softmax normaliser of each (query row, head) of a few rows over the cache's keys: its maximum score and the sum
// of exp(score - maximum), into stats[(t * heads + h) * 2 ..]. One workgroup per pair, merged in workgroup memory.
@group(0) @binding(1) var<storage, read> q: array<f32>;
@group(0) @binding(2) var<storage, read> kc: array<f32>;
@group(0) @binding(3) var<storage, read_write> stats: array<f32>;
#include "attention-mass-common.wgsl"

var<workgroup> maxes: array<f32, 64>;
var<workgroup> sums: array<f32, 64>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let pair = wid.y * nwg.x + wid.x;
  if (pair >= p.rows * p.heads) { return; }
  let t = pair / p.heads;
  let h = pair % p.heads;
  let pos = p.posBase + t;
  var m = -3.0e38;
  var l = 0.0;
  for (var j = key_start(pos) + lid; j <= pos; j += 64u) {
    let s = score(t, h, j);
    if (s > m) {
      l = l * exp(m - s) + 1.0;
      m = s;
    } else {
      l += exp(s - m);
    }
  }
  maxes[lid] = m;
  sums[lid] = l;
  workgroupBarrier();
  for (var stride = 32u; stride > 0u; stride /= 2u) {
    if (lid < stride) {
      let m2 = maxes[lid + stride];
      let mm = max(maxes[lid], m2);
      sums[lid] = sums[lid] * exp(maxes[lid] - mm) + sums[lid + stride] * exp(m2 - mm);
      maxes[lid] = mm;
    }
    workgroupBarrier();
  }
  if (lid == 0u) {
    stats[pair * 2u] = maxes[0];
    stats[pair * 2u + 1u] = sums[0];
  }
}
