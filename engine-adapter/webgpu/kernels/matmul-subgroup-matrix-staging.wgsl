// What both tensor-core matmuls share: the bindings, the K step and staged row stride, a thread's loads of one K
// step's operands and its stores of them into the staged tiles, the operand matrices' loads from those tiles and the
// results' way out. The includer declares the staged tiles xs [rows][TKP] and ws [columns][TKP] (f16) and cs (f32, a
// 16 x 16 slot per subgroup); the uniforms come from matmul-common.wgsl. Each kernel keeps its operands in arrays of
// its own and passes them a vector at a time: the same loops over module-scope private arrays here made the 128 x 128
// kernel 26% slower on the H200, and loops here over pointers to the kernels' arrays added 150 register moves to each
// K step of its machine code (tools/gpu/kernel-sass.ts), so each kernel writes its loops out.
#if W_BLOCKS
#include "weight-blocks.wgsl"
#endif
@group(0) @binding(1) var<storage, read> x: array<vec4f>;
@group(0) @binding(2) var<storage, read> w: array<vec4u>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;

const TK = 32u;
// Row stride of the staged tiles: 8 halves of padding spread the 16 rows a matrix load reads over the banks.
const TKP = TK + 8u;

// Element e of a K step's x tile (rows of 8 vec4f from row m0) and W tile (rows of 4 vec4u, 8 halves each, from row
// n0), zero beyond the ragged edges.
fn xPart(m0: u32, k0: u32, e: u32) -> vec4f {
  let r = e / 8u;
  if (m0 + r >= p.m) { return vec4f(0.0); }
  return x[(m0 + r) * (p.k / 4u) + k0 / 4u + e % 8u];
}

fn wPart(n0: u32, k0: u32, e: u32) -> vec4u {
#if W_BLOCKS
  // The step's tile is one block (n0 is a multiple of 128, rows past n are stored as zeros).
  return w[blockWord(n0, k0 / 2u, p.rowWords) / 4u + e];
#else
  let r = e / 4u;
  if (n0 + r >= p.n) { return vec4u(0u); }
  return w[(n0 + r) * (p.rowWords / 4u) + k0 / 8u + e % 4u];
#endif
}

// Stores element e of a K step's x tile (see xPart) into xs, rounded to f16.
fn stageX(e: u32, v: vec4f) {
  let at = (e / 8u) * TKP + (e % 8u) * 4u;
  xs[at] = f16(v.x);
  xs[at + 1u] = f16(v.y);
  xs[at + 2u] = f16(v.z);
  xs[at + 3u] = f16(v.w);
}

// Stores element e of a K step's W tile (see wPart: 8 halves) into ws.
fn stageW(e: u32, v: vec4u) {
  let at = (e / 4u) * TKP + (e % 4u) * 8u;
  for (var j = 0u; j < 4u; j++) {
    let h = bitcast<vec2<f16>>(v[j]);
    ws[at + 2u * j] = h.x;
    ws[at + 2u * j + 1u] = h.y;
  }
}

fn leftAt(row: u32, kk: u32) -> subgroup_matrix_left<f16, 16, 16> {
#if SGMAT_TEMPLATE
  return subgroupMatrixLoad<subgroup_matrix_left<f16, 16, 16>, row_major>(&xs, row * TKP + kk, TKP);
#else
  return subgroupMatrixLoad<subgroup_matrix_left<f16, 16, 16>>(&xs, row * TKP + kk, false, TKP);
#endif
}

fn rightAt(col: u32, kk: u32) -> subgroup_matrix_right<f16, 16, 16> {
#if SGMAT_TEMPLATE
  return subgroupMatrixLoad<subgroup_matrix_right<f16, 16, 16>, col_major>(&ws, col * TKP + kk, TKP);
#else
  return subgroupMatrixLoad<subgroup_matrix_right<f16, 16, 16>>(&ws, col * TKP + kk, true, TKP);
#endif
}

// Writes one of subgroup sg's result matrices to output rows row0.. and columns col0.., masked at the edges, through
// the subgroup's slot of cs. The barriers order the slot's store, its reads and the next store (every subgroup runs
// the same sequence).
fn writeOut(c: subgroup_matrix_result<f32, 16, 16>, sg: u32, lane: u32, row0: u32, col0: u32, z: u32) {
#if SGMAT_TEMPLATE
  subgroupMatrixStore<row_major>(&cs, sg * 256u, c, 16u);
#else
  subgroupMatrixStore(&cs, sg * 256u, c, false, 16u);
#endif
  workgroupBarrier();
  for (var l = 0u; l < 8u; l++) {
    let e = lane + l * 32u;
    let row = row0 + e / 16u;
    let col = col0 + e % 16u;
    if (row < p.m && col < p.n) {
      var v = cs[sg * 256u + e];
      if (p.hasBias != 0u && z == 0u) { v += bias[col]; }
#if SPLIT_K
      y[(z * p.m + row) * p.n + col] = v;
#else
      store(row * p.n + col, v);
#endif
    }
  }
  workgroupBarrier();
}
