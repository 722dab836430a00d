// y[m][n] = x[m][k] . W[n][k]^T (+ bias[n]) on the tensor cores through subgroup matrices (16x16x16, f16 inputs,
// f32 accumulation), for prefill chunks (a question's few rows take matmul-subgroup-matrix-short.wgsl). A workgroup
// is four 32-wide subgroups computing a 128 x 128 output tile: subgroup s owns the 64 rows from (s / 2) * 64 and the
// 64 columns from (s % 2) * 64, as 4 x 4 result matrices.
//
// Large tiles are what make this fast: every staged element feeds four products, so global and workgroup memory
// traffic per product falls with the tile (32 x 32 one-subgroup tiles ran 2-4x slower on the H200).
// K advances 32 at a time: x (f32, rounded to f16) and W (f16 pairs packed in u32) are staged in workgroup memory,
// x row-major [m][k] as the left operand and W as [n][k], which read column-major is the right operand W^T. The next
// step's operands are loaded into registers while this step multiplies. With W_BLOCKS, W is stored in the blocks
// layout (weight-blocks.wgsl) and a K step's W tile is one contiguous block. The launcher guarantees k % 32 == 0; m and
// n may be ragged (zero-filled, masked stores).
// Workgroup z sums K range [z * kPer, (z + 1) * kPer) (kPer a multiple of 32); with SPLIT_K it writes that partial
// product to y's part z, [z][m][n] (part 0 with the bias), for matmul-split-reduce.wgsl to add up.
enable f16;
enable chromium_experimental_subgroup_matrix;
// Each subgroup loads its own fragments, so matrix offsets differ between the subgroups of a workgroup. They are
// uniform within each subgroup, which is what the hardware needs; Tint's check asks for workgroup uniformity.
diagnostic(off, chromium.subgroup_matrix_uniformity);

#include "matmul-common.wgsl"
#include "matmul-subgroup-matrix-staging.wgsl"

const THREADS = 128u;
const TM = 128u;
const TN = 128u;
// A thread's share of one K step: x is TM rows of 8 vec4f, W is TN rows of 4 vec4u (8 halves each).
const XV = TM * 8u / THREADS;
const WV = TN * 4u / THREADS;

var<workgroup> xs: array<f16, TM * TKP>; // [TM][TKP]
var<workgroup> ws: array<f16, TN * TKP>; // [TN][TKP]
// One 16 x 16 result matrix per subgroup on its way out.
var<workgroup> cs: array<f32, 1024>; // [4][16][16]

@compute @workgroup_size(THREADS)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32) {
  let sg = lid / 32u;
  let lane = lid % 32u;
  let m0 = wid.y * TM;
  let n0 = wid.x * TN;
  // This subgroup's first row and column within the tile.
  let sm = (sg / 2u) * 64u;
  let sn = (sg % 2u) * 64u;
  var c00 = subgroup_matrix_result<f32, 16, 16>();
  var c01 = subgroup_matrix_result<f32, 16, 16>();
  var c02 = subgroup_matrix_result<f32, 16, 16>();
  var c03 = subgroup_matrix_result<f32, 16, 16>();
  var c10 = subgroup_matrix_result<f32, 16, 16>();
  var c11 = subgroup_matrix_result<f32, 16, 16>();
  var c12 = subgroup_matrix_result<f32, 16, 16>();
  var c13 = subgroup_matrix_result<f32, 16, 16>();
  var c20 = subgroup_matrix_result<f32, 16, 16>();
  var c21 = subgroup_matrix_result<f32, 16, 16>();
  var c22 = subgroup_matrix_result<f32, 16, 16>();
  var c23 = subgroup_matrix_result<f32, 16, 16>();
  var c30 = subgroup_matrix_result<f32, 16, 16>();
  var c31 = subgroup_matrix_result<f32, 16, 16>();
  var c32 = subgroup_matrix_result<f32, 16, 16>();
  var c33 = subgroup_matrix_result<f32, 16, 16>();
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
      let b2 = rightAt(sn + 32u, kk);
      let b3 = rightAt(sn + 48u, kk);
      var a = leftAt(sm, kk);
      c00 = subgroupMatrixMultiplyAccumulate(a, b0, c00);
      c01 = subgroupMatrixMultiplyAccumulate(a, b1, c01);
      c02 = subgroupMatrixMultiplyAccumulate(a, b2, c02);
      c03 = subgroupMatrixMultiplyAccumulate(a, b3, c03);
      a = leftAt(sm + 16u, kk);
      c10 = subgroupMatrixMultiplyAccumulate(a, b0, c10);
      c11 = subgroupMatrixMultiplyAccumulate(a, b1, c11);
      c12 = subgroupMatrixMultiplyAccumulate(a, b2, c12);
      c13 = subgroupMatrixMultiplyAccumulate(a, b3, c13);
      a = leftAt(sm + 32u, kk);
      c20 = subgroupMatrixMultiplyAccumulate(a, b0, c20);
      c21 = subgroupMatrixMultiplyAccumulate(a, b1, c21);
      c22 = subgroupMatrixMultiplyAccumulate(a, b2, c22);
      c23 = subgroupMatrixMultiplyAccumulate(a, b3, c23);
      a = leftAt(sm + 48u, kk);
      c30 = subgroupMatrixMultiplyAccumulate(a, b0, c30);
      c31 = subgroupMatrixMultiplyAccumulate(a, b1, c31);
      c32 = subgroupMatrixMultiplyAccumulate(a, b2, c32);
      c33 = subgroupMatrixMultiplyAccumulate(a, b3, c33);
    }
    workgroupBarrier();
  }
  let r0 = m0 + sm;
  let c0 = n0 + sn;
  writeOut(c00, sg, lane, r0, c0, wid.z);
  writeOut(c01, sg, lane, r0, c0 + 16u, wid.z);
  writeOut(c02, sg, lane, r0, c0 + 32u, wid.z);
  writeOut(c03, sg, lane, r0, c0 + 48u, wid.z);
  writeOut(c10, sg, lane, r0 + 16u, c0, wid.z);
  writeOut(c11, sg, lane, r0 + 16u, c0 + 16u, wid.z);
  writeOut(c12, sg, lane, r0 + 16u, c0 + 32u, wid.z);
  writeOut(c13, sg, lane, r0 + 16u, c0 + 48u, wid.z);
  writeOut(c20, sg, lane, r0 + 32u, c0, wid.z);
  writeOut(c21, sg, lane, r0 + 32u, c0 + 16u, wid.z);
  writeOut(c22, sg, lane, r0 + 32u, c0 + 32u, wid.z);
  writeOut(c23, sg, lane, r0 + 32u, c0 + 48u, wid.z);
  writeOut(c30, sg, lane, r0 + 48u, c0, wid.z);
  writeOut(c31, sg, lane, r0 + 48u, c0 + 16u, wid.z);
  writeOut(c32, sg, lane, r0 + 48u, c0 + 32u, wid.z);
  writeOut(c33, sg, lane, r0 + 48u, c0 + 48u, wid.z);
}
