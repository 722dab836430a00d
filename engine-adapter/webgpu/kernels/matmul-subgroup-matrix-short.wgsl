// y[m][n] = x[m][k] . W[n][k]^T (+ bias[n]) on the tensor cores (16x16x16 subgroup matrices, f16 inputs, f32
// accumulation) for at most 64 rows: a question's prefill (matmul-subgroup-matrix.wgsl takes prefill chunks). There
// the weights' bandwidth rules, so a workgroup takes all 64 rows and 128 columns, and every byte of W is read once:
// four 32-wide subgroups, subgroup s owning the 32 columns from 32 s as 4 x 2 result matrices. (One-subgroup 32 x 32
// tiles read W twice and x once per 32 columns, three times the traffic: the 8B question's matmuls took 26 ms on the
// H200 against 14 ms here. Loading W into matrices straight from storage, unstaged, was slower still.)
// K advances 32 at a time through workgroup memory as in matmul-subgroup-matrix.wgsl, whose notes on staging, ragged
// edges and split-K parts (SPLIT_K) hold here too.
enable f16;
enable chromium_experimental_subgroup_matrix;
diagnostic(off, chromium.subgroup_matrix_uniformity);

#include "matmul-common.wgsl"
#include "matmul-subgroup-matrix-staging.wgsl"

const THREADS = 128u;
const TM = 64u;
const TN = 128u;
const XV = TM * 8u / THREADS;
const WV = TN * 4u / THREADS;

var<workgroup> xs: array<f16, TM * TKP>; // [TM][TKP]
var<workgroup> ws: array<f16, TN * TKP>; // [TN][TKP]
var<workgroup> cs: array<f32, 1024>; // [4][16][16]

@compute @workgroup_size(THREADS)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32) {
  let sg = lid / 32u;
  let lane = lid % 32u;
  let m0 = wid.y * TM;
  let n0 = wid.x * TN;
  let sn = sg * 32u;
  var c00 = subgroup_matrix_result<f32, 16, 16>();
  var c01 = subgroup_matrix_result<f32, 16, 16>();
  var c10 = subgroup_matrix_result<f32, 16, 16>();
  var c11 = subgroup_matrix_result<f32, 16, 16>();
  var c20 = subgroup_matrix_result<f32, 16, 16>();
  var c21 = subgroup_matrix_result<f32, 16, 16>();
  var c30 = subgroup_matrix_result<f32, 16, 16>();
  var c31 = subgroup_matrix_result<f32, 16, 16>();
  let kStart = wid.z * p.kPer;
  let kEnd = min(p.k, kStart + p.kPer);
  var xr: array<vec4f, XV>;
  var wr: array<vec4u, WV>;
  if (kStart < kEnd) {
    for (var l = 0u; l < XV; l++) { xr[l] = xPart(m0, kStart, lid + l * THREADS); }
    for (var l = 0u; l < WV; l++) { wr[l] = wPart(n0, kStart, lid + l * THREADS); }
  }
  for (var k0 = kStart; k0 < kEnd; k0 += TK) {
    for (var l = 0u; l < XV; l++) { stageX(lid + l * THREADS, xr[l]); }
    for (var l = 0u; l < WV; l++) { stageW(lid + l * THREADS, wr[l]); }
    workgroupBarrier();
    let next = k0 + TK;
    if (next < kEnd) {
      for (var l = 0u; l < XV; l++) { xr[l] = xPart(m0, next, lid + l * THREADS); }
      for (var l = 0u; l < WV; l++) { wr[l] = wPart(n0, next, lid + l * THREADS); }
    }
    for (var kk = 0u; kk < TK; kk += 16u) {
      let b0 = rightAt(sn, kk);
      let b1 = rightAt(sn + 16u, kk);
      var a = leftAt(0u, kk);
      c00 = subgroupMatrixMultiplyAccumulate(a, b0, c00);
      c01 = subgroupMatrixMultiplyAccumulate(a, b1, c01);
      a = leftAt(16u, kk);
      c10 = subgroupMatrixMultiplyAccumulate(a, b0, c10);
      c11 = subgroupMatrixMultiplyAccumulate(a, b1, c11);
      a = leftAt(32u, kk);
      c20 = subgroupMatrixMultiplyAccumulate(a, b0, c20);
      c21 = subgroupMatrixMultiplyAccumulate(a, b1, c21);
      a = leftAt(48u, kk);
      c30 = subgroupMatrixMultiplyAccumulate(a, b0, c30);
      c31 = subgroupMatrixMultiplyAccumulate(a, b1, c31);
    }
    workgroupBarrier();
  }
  let c0 = n0 + sn;
  writeOut(c00, sg, lane, m0, c0, wid.z);
  writeOut(c01, sg, lane, m0, c0 + 16u, wid.z);
  writeOut(c10, sg, lane, m0 + 16u, c0, wid.z);
  writeOut(c11, sg, lane, m0 + 16u, c0 + 16u, wid.z);
  writeOut(c20, sg, lane, m0 + 32u, c0, wid.z);
  writeOut(c21, sg, lane, m0 + 32u, c0 + 16u, wid.z);
  writeOut(c30, sg, lane, m0 + 48u, c0, wid.z);
  writeOut(c31, sg, lane, m0 + 48u, c0 + 16u, wid.z);
}
