// y[m][n] = x[m][k] . W[n][k]^T (+ bias[n]) on the tensor cores through subgroup matrices (16x16x16, f16 inputs,
// f32 accumulation), for a question's few rows (matmul-subgroup-matrix.wgsl takes prefill chunks): there the weights'
// bandwidth rules, and small tiles give enough workgroups with a 4-way K split where 128 x 128 tiles would need 16
// parts whose traffic outweighs the weights'. A workgroup is one 32-wide subgroup computing a 32x32 output tile as
// 2x2 result matrices: subgroup-matrix operands must be workgroup-uniform, so every offset derives from the
// workgroup id alone. K advances 32 at a time: x (f32, rounded to f16) and W (f16 pairs packed in u32) are staged in
// workgroup memory, x row-major [m][k] as the left operand and W as [n][k], which read column-major is the right
// operand W^T. The launcher guarantees k % 32 == 0; m and n may be ragged (zero-filled, masked stores).
// Workgroup z sums K range [z * kPer, (z + 1) * kPer) (kPer a multiple of 32); with SPLIT_K it writes that partial
// product to y's part z, [z][m][n] (part 0 with the bias), for matmul-split-reduce.wgsl to add up.
enable f16;
enable chromium_experimental_subgroup_matrix;

#include "matmul-common.wgsl"
#include "matmul-subgroup-matrix-staging.wgsl"

const TM = 32u;
const TN = 32u;

var<workgroup> xs: array<f16, TM * TKP>; // [TM][TKP]
var<workgroup> ws: array<f16, TN * TKP>; // [TN][TKP]
var<workgroup> cs: array<f32, 1024>; // [TM][TN]

@compute @workgroup_size(32)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32) {
  let m0 = wid.y * TM;
  let n0 = wid.x * TN;
  var c00 = subgroup_matrix_result<f32, 16, 16>();
  var c01 = subgroup_matrix_result<f32, 16, 16>();
  var c10 = subgroup_matrix_result<f32, 16, 16>();
  var c11 = subgroup_matrix_result<f32, 16, 16>();
  let kStart = wid.z * p.kPer;
  let kEnd = min(p.k, kStart + p.kPer);
  // The next step's operands are loaded into registers while this step's multiply runs: with one subgroup per
  // workgroup nothing else hides the global memory latency.
  var xr: array<vec4f, 8>;
  var wr: array<vec4u, 4>;
  if (kStart < kEnd) {
    for (var l = 0u; l < 8u; l++) { xr[l] = xPart(m0, kStart, lid + l * 32u); }
    for (var l = 0u; l < 4u; l++) { wr[l] = wPart(n0, kStart, lid + l * 32u); }
  }
  for (var k0 = kStart; k0 < kEnd; k0 += TK) {
    for (var l = 0u; l < 8u; l++) {
      let e = lid + l * 32u;
      let at = (e / 8u) * TKP + (e % 8u) * 4u;
      let v = xr[l];
      xs[at] = f16(v.x);
      xs[at + 1u] = f16(v.y);
      xs[at + 2u] = f16(v.z);
      xs[at + 3u] = f16(v.w);
    }
    for (var l = 0u; l < 4u; l++) {
      let e = lid + l * 32u;
      let at = (e / 4u) * TKP + (e % 4u) * 8u;
      for (var j = 0u; j < 4u; j++) {
        let h = bitcast<vec2<f16>>(wr[l][j]);
        ws[at + 2u * j] = h.x;
        ws[at + 2u * j + 1u] = h.y;
      }
    }
    workgroupBarrier();
    let next = k0 + TK;
    if (next < kEnd) {
      for (var l = 0u; l < 8u; l++) { xr[l] = xPart(m0, next, lid + l * 32u); }
      for (var l = 0u; l < 4u; l++) { wr[l] = wPart(n0, next, lid + l * 32u); }
    }
    for (var kk = 0u; kk < TK; kk += 16u) {
#if SGMAT_TEMPLATE
      let a0 = subgroupMatrixLoad<subgroup_matrix_left<f16, 16, 16>, row_major>(&xs, kk, TKP);
      let a1 = subgroupMatrixLoad<subgroup_matrix_left<f16, 16, 16>, row_major>(&xs, 16u * TKP + kk, TKP);
      let b0 = subgroupMatrixLoad<subgroup_matrix_right<f16, 16, 16>, col_major>(&ws, kk, TKP);
      let b1 = subgroupMatrixLoad<subgroup_matrix_right<f16, 16, 16>, col_major>(&ws, 16u * TKP + kk, TKP);
#else
      let a0 = subgroupMatrixLoad<subgroup_matrix_left<f16, 16, 16>>(&xs, kk, false, TKP);
      let a1 = subgroupMatrixLoad<subgroup_matrix_left<f16, 16, 16>>(&xs, 16u * TKP + kk, false, TKP);
      let b0 = subgroupMatrixLoad<subgroup_matrix_right<f16, 16, 16>>(&ws, kk, true, TKP);
      let b1 = subgroupMatrixLoad<subgroup_matrix_right<f16, 16, 16>>(&ws, 16u * TKP + kk, true, TKP);
#endif
      c00 = subgroupMatrixMultiplyAccumulate(a0, b0, c00);
      c01 = subgroupMatrixMultiplyAccumulate(a0, b1, c01);
      c10 = subgroupMatrixMultiplyAccumulate(a1, b0, c10);
      c11 = subgroupMatrixMultiplyAccumulate(a1, b1, c11);
    }
    workgroupBarrier();
  }
#if SGMAT_TEMPLATE
  subgroupMatrixStore<row_major>(&cs, 0u, c00, TN);
  subgroupMatrixStore<row_major>(&cs, 16u, c01, TN);
  subgroupMatrixStore<row_major>(&cs, 16u * TN, c10, TN);
  subgroupMatrixStore<row_major>(&cs, 16u * TN + 16u, c11, TN);
#else
  subgroupMatrixStore(&cs, 0u, c00, false, TN);
  subgroupMatrixStore(&cs, 16u, c01, false, TN);
  subgroupMatrixStore(&cs, 16u * TN, c10, false, TN);
  subgroupMatrixStore(&cs, 16u * TN + 16u, c11, false, TN);
#endif
  workgroupBarrier();
  for (var l = 0u; l < 32u; l++) {
    let e = lid + l * 32u;
    let row = m0 + e / TN;
    let col = n0 + e % TN;
    if (row < p.m && col < p.n) {
      var v = cs[e];
      if (p.hasBias != 0u && wid.z == 0u) { v += bias[col]; }
#if SPLIT_K
      y[(wid.z * p.m + row) * p.n + col] = v;
#else
      y[row * p.n + col] = v;
#endif
    }
  }
}
