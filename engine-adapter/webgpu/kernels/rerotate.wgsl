// Rotates keys already in a layer's cache. Job z (expand-jobs.wgsl) covers tokens [start, start + tokens) with
// jobs[z] = (start, delta as i32 bits, posStep, 0): by a signed delta (keys computed at another base position,
// posStep 0), or at positions start + t (keys stored before RoPE: posStep 1, delta 0).
#include "rope-common.wgsl"
#include "expand-jobs.wgsl"

struct Params { tokens: u32, kvHeads: u32, headDim: u32, jobs: array<vec4u, MAX_JOBS> }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> cache: array<f32>;
@group(0) @binding(2) var<storage, read> invFreq: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let half = p.headDim / 2u;
  let i = (wid.y * nwg.x + wid.x) * 256u + lid;
  if (i >= p.tokens * p.kvHeads * half) { return; }
  let job = p.jobs[wid.z];
  let start = job.x;
  let j = i % half;
  let row = i / half;
  let t = row / p.kvHeads;
  let pos = i32((start + t) * job.z) + bitcast<i32>(job.y);
  let base = (start * p.kvHeads + row) * p.headDim;
  let r = rope_pair(cache[base + j], cache[base + j + half], rope_cos_sin(f32(pos), invFreq[j]));
  cache[base + j] = r.x;
  cache[base + j + half] = r.y;
}
