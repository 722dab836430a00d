// y[m][n] = x[m][k] . W[n][k]^T (+ bias[n]). 64x64 output tiles per workgroup of 16x16 threads, each thread
// computing 4x4 outputs from 16-deep K slices staged in workgroup memory. With F16_WEIGHTS, W rows are f16 pairs
// packed in u32 words (rowWords per row). Workgroup z sums K range [z * kPer, (z + 1) * kPer); with SPLIT_K it writes
// that partial product to y's part z, [z][m][n] (part 0 with the bias), for matmul-split-reduce.wgsl to add up.
#include "matmul-common.wgsl"
@group(0) @binding(1) var<storage, read> x: array<f32>;
#if F16_WEIGHTS
@group(0) @binding(2) var<storage, read> w: array<u32>;
#else
@group(0) @binding(2) var<storage, read> w: array<f32>;
#endif
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;

const TM = 64u;
const TN = 64u;
const TK = 16u;
// Rows of the staged tiles are padded by one float: the loads below store 16 consecutive k of one row from
// consecutive threads, which without padding would all hit one shared-memory bank.
const XS = TM + 1u;
const WS = TN + 1u;

var<workgroup> xs: array<f32, 1040>; // [TK][XS]
var<workgroup> ws: array<f32, 1040>; // [TK][WS]

fn weight(row: u32, col: u32) -> f32 {
#if F16_WEIGHTS
  return unpack2x16float(w[row * p.rowWords + col / 2u])[col & 1u];
#else
  return w[row * p.k + col];
#endif
}

@compute @workgroup_size(16, 16)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid3: vec3u, @builtin(local_invocation_index) lid: u32) {
  let m0 = wid.y * TM;
  let n0 = wid.x * TN;
  let tx = lid3.x;
  let ty = lid3.y;
  var acc: array<array<f32, 4>, 4>;
  let kStart = wid.z * p.kPer;
  let kEnd = min(p.k, kStart + p.kPer);
  for (var k0 = kStart; k0 < kEnd; k0 += TK) {
    for (var l = 0u; l < 4u; l++) {
      let e = lid + l * 256u;
      let r = e / TK;
      let kk = e % TK;
      let col = k0 + kk;
      var xv = 0.0;
      if (m0 + r < p.m && col < kEnd) { xv = x[(m0 + r) * p.k + col]; }
      xs[kk * XS + r] = xv;
      var wv = 0.0;
      if (n0 + r < p.n && col < kEnd) { wv = weight(n0 + r, col); }
      ws[kk * WS + r] = wv;
    }
    workgroupBarrier();
    for (var kk = 0u; kk < TK; kk++) {
      var a: array<f32, 4>;
      var b: array<f32, 4>;
      for (var i = 0u; i < 4u; i++) {
        a[i] = xs[kk * XS + ty + 16u * i];
        b[i] = ws[kk * WS + tx + 16u * i];
      }
      for (var i = 0u; i < 4u; i++) {
        for (var j = 0u; j < 4u; j++) {
          acc[i][j] = fma(a[i], b[j], acc[i][j]);
        }
      }
    }
    workgroupBarrier();
  }
  for (var i = 0u; i < 4u; i++) {
    let row = m0 + ty + 16u * i;
    if (row >= p.m) { continue; }
    for (var j = 0u; j < 4u; j++) {
      let col = n0 + tx + 16u * j;
      if (col >= p.n) { continue; }
      var v = acc[i][j];
      if (p.hasBias != 0u && wid.z == 0u) { v += bias[col]; }
#if SPLIT_K
      y[(wid.z * p.m + row) * p.n + col] = v;
#else
      store(row * p.n + col, v);
#endif
    }
  }
}
