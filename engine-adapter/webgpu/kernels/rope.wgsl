// RoPE in place on x[tokens][heads][headDim] for tokens at positions posBase + t (with SLOTS: slots[t]).
#include "rope-common.wgsl"

struct Params { tokens: u32, heads: u32, headDim: u32, posBase: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;
@group(0) @binding(2) var<storage, read> invFreq: array<f32>;
#if SLOTS
@group(0) @binding(3) var<storage, read> slots: array<u32>;
fn position(t: u32) -> u32 { return slots[t]; }
#else
fn position(t: u32) -> u32 { return p.posBase + t; }
#endif

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let half = p.headDim / 2u;
  let i = (wid.y * nwg.x + wid.x) * 256u + lid;
  if (i >= p.tokens * p.heads * half) { return; }
  let j = i % half;
  let row = i / half;
  let t = row / p.heads;
  let base = row * p.headDim;
  let r = rope_pair(x[base + j], x[base + j + half], rope_cos_sin(f32(position(t)), invFreq[j]));
  x[base + j] = r.x;
  x[base + j + half] = r.y;
}
