// Rotates keys already in a layer's cache, tokens [start, start + tokens): by a signed delta (keys computed at
// another base position), or at positions start + t (keys stored before RoPE: posStep 1, delta 0).
#include "rope-common.wgsl"

struct Params { start: u32, tokens: u32, kvHeads: u32, headDim: u32, delta: i32, posStep: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> cache: array<f32>;
@group(0) @binding(2) var<storage, read> invFreq: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let half = p.headDim / 2u;
  let i = (wid.y * nwg.x + wid.x) * 256u + lid;
  if (i >= p.tokens * p.kvHeads * half) { return; }
  let j = i % half;
  let row = i / half;
  let t = row / p.kvHeads;
  let pos = i32((p.start + t) * p.posStep) + p.delta;
  let base = (p.start * p.kvHeads + row) * p.headDim;
  let r = rope_pair(cache[base + j], cache[base + j + half], rope_cos_sin(f32(pos), invFreq[j]));
  cache[base + j] = r.x;
  cache[base + j + half] = r.y;
}
