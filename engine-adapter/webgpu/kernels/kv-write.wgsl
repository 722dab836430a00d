// Copies K and V rows of new tokens ([tokens][kvHeads*headDim] each) into a layer's token-major cache at a token
// offset, or with SLOTS row t to token slots[t].
struct Params { count: u32, dstOffset: u32, rowSize: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> k: array<f32>;
@group(0) @binding(2) var<storage, read> v: array<f32>;
@group(0) @binding(3) var<storage, read_write> cacheK: array<f32>;
@group(0) @binding(4) var<storage, read_write> cacheV: array<f32>;
#if SLOTS
@group(0) @binding(5) var<storage, read> slots: array<u32>;
fn destination(i: u32) -> u32 { return slots[i / p.rowSize] * p.rowSize + i % p.rowSize; }
#else
fn destination(i: u32) -> u32 { return p.dstOffset + i; }
#endif

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let i = (wid.y * nwg.x + wid.x) * 256u + lid;
  if (i >= p.count) { return; }
  let at = destination(i);
  cacheK[at] = k[i];
  cacheV[at] = v[i];
}
