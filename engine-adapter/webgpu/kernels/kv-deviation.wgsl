// CacheBlend's selection signal: for each new row t at position posBase + t, the squared L2 distance between its
// fresh K and V ([rows][rowSize] each) and the K and V the layer's cache holds there (injected, computed without the
// row's real prefix), into out[outOffset + t]; with SLOTS row t sits at position slots[t] instead (a blend's rows
// still running, gathered from anywhere in the sequence). One workgroup per row, reduced in workgroup memory.
struct Params { rows: u32, rowSize: u32, posBase: u32, outOffset: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> k: array<f32>;
@group(0) @binding(2) var<storage, read> v: array<f32>;
@group(0) @binding(3) var<storage, read> cacheK: array<f32>;
@group(0) @binding(4) var<storage, read> cacheV: array<f32>;
@group(0) @binding(5) var<storage, read_write> out: array<f32>;
#if SLOTS
@group(0) @binding(6) var<storage, read> slots: array<u32>;
fn slot(t: u32) -> u32 { return slots[t]; }
#else
fn slot(t: u32) -> u32 { return p.posBase + t; }
#endif

var<workgroup> partial: array<f32, 64>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let t = wid.y * nwg.x + wid.x;
  if (t >= p.rows) { return; }
  let src = t * p.rowSize;
  let dst = slot(t) * p.rowSize;
  var sum = 0.0;
  for (var i = lid; i < p.rowSize; i += 64u) {
    let dk = k[src + i] - cacheK[dst + i];
    let dv = v[src + i] - cacheV[dst + i];
    sum += dk * dk + dv * dv;
  }
  partial[lid] = sum;
  workgroupBarrier();
  for (var stride = 32u; stride > 0u; stride /= 2u) {
    if (lid < stride) { partial[lid] += partial[lid + stride]; }
    workgroupBarrier();
  }
  if (lid == 0u) { out[p.outOffset + t] = partial[0]; }
}
