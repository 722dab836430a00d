// Expands int8 or int4 KV layer blocks (storage/kv-object/codecs/int8.ts and int4.ts give the layout: keys
// quantized per channel over token groups, values per token over channel groups, f16 scale and min per group)
// into a layer's f32 key and value caches. Section offsets are bytes from a block's start, each 4-byte aligned.
// Job z (expand-jobs.wgsl): the block at byte jobs[z].x of src goes to float index jobs[z].y of the caches.
#include "expand-jobs.wgsl"

struct Params {
  n: u32, channels: u32, groupSize: u32, valueGroups: u32,
  keyScale: u32, keyMin: u32, keyCodes: u32,
  valueScale: u32, valueMin: u32, valueCodes: u32,
  jobs: array<vec4u, MAX_JOBS>,
}
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<u32>;
@group(0) @binding(2) var<storage, read_write> keys: array<f32>;
@group(0) @binding(3) var<storage, read_write> values: array<f32>;

override BITS: u32 = 8u;

// The f16 at element `index` of the section starting at byte `base`.
fn half_at(base: u32, index: u32) -> f32 {
  let byte = base + 2u * index;
  return unpack2x16float(src[byte >> 2u] >> ((byte & 2u) * 8u)).x;
}

// Code of element `index` of the codes section at byte `base`: a byte, or a nibble (low nibble for even index).
fn code_at(base: u32, index: u32) -> f32 {
  if (BITS == 8u) {
    let byte = base + index;
    return f32((src[byte >> 2u] >> ((byte & 3u) * 8u)) & 0xffu);
  }
  let byte = base + (index >> 1u);
  let b = (src[byte >> 2u] >> ((byte & 3u) * 8u)) & 0xffu;
  return f32((b >> ((index & 1u) * 4u)) & 0xfu);
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let i = (wid.y * nwg.x + wid.x) * 256u + lid;
  if (i >= p.n) { return; }
  let job = p.jobs[wid.z];
  let t = i / p.channels;
  let c = i % p.channels;
  let kg = (t / p.groupSize) * p.channels + c;
  keys[job.y + i] = fma(code_at(job.x + p.keyCodes, i), half_at(job.x + p.keyScale, kg), half_at(job.x + p.keyMin, kg));
  let vg = t * p.valueGroups + c / p.groupSize;
  values[job.y + i] = fma(code_at(job.x + p.valueCodes, i), half_at(job.x + p.valueScale, vg), half_at(job.x + p.valueMin, vg));
}
