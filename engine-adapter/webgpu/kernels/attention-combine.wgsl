// Merges the key-range parts of split attention (attention.wgsl with SPLIT): for each (token, head) row,
// out = sum_s exp(m_s - M) acc_s / sum_s exp(m_s - M) l_s with M the largest part maximum. A part that saw no
// visible key has m = -3e38 and l = 0, so it weighs nothing.
struct Params { rows: u32, headDim: u32, splits: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> partAcc: array<f32>;
@group(0) @binding(2) var<storage, read> partStats: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let i = (wid.y * nwg.x + wid.x) * 256u + lid;
  if (i >= p.rows * p.headDim) { return; }
  let row = i / p.headDim;
  let d = i % p.headDim;
  var big = -3.0e38;
  for (var s = 0u; s < p.splits; s++) { big = max(big, partStats[2u * (s * p.rows + row)]); }
  var num = 0.0;
  var den = 0.0;
  for (var s = 0u; s < p.splits; s++) {
    let part = s * p.rows + row;
    let w = exp(partStats[2u * part] - big);
    num = fma(w, partAcc[part * p.headDim + d], num);
    den = fma(w, partStats[2u * part + 1u], den);
  }
  out[i] = num / den;
}
