// Expands fp16 KV layer blocks (keys f16[n] then values f16[n], little-endian, see storage/kv-object/codecs/fp16.ts),
// uploaded as raw words, into a layer's f32 key and value caches. Job z (expand-jobs.wgsl): the block at byte
// jobs[z].x of src goes to float index jobs[z].y of the caches.
#include "expand-jobs.wgsl"

struct Params { n: u32, jobs: array<vec4u, MAX_JOBS> }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<u32>;
@group(0) @binding(2) var<storage, read_write> keys: array<f32>;
@group(0) @binding(3) var<storage, read_write> values: array<f32>;

// The half at byte offset base + 2 * index (base a multiple of 4).
fn half_at(base: u32, index: u32) -> f32 {
  let word = src[(base >> 2u) + (index >> 1u)];
  return unpack2x16float(word >> ((index & 1u) * 16u)).x;
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let i = (wid.y * nwg.x + wid.x) * 256u + lid;
  if (i >= p.n) { return; }
  let job = p.jobs[wid.z];
  keys[job.y + i] = half_at(job.x, i);
  values[job.y + i] = half_at(job.x, p.n + i);
}
