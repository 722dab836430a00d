// Prefill attention on the tensor cores (16x16x16 f16 subgroup matrices, f32 accumulation). A workgroup is one
// 32-wide subgroup: subgroup-matrix operands must be workgroup-uniform, so every offset derives from the workgroup id
// alone. It takes one kv head and 16 query rows, a row being (token, q head of that kv head's GQA group) as in
// attention.wgsl, so every K/V tile staged in workgroup memory serves 16 rows.
// Keys stream in tiles of BK = 32 over the workgroup's causal range only (tiles past its last row are never read).
//
// Two passes over the keys instead of an online rescale, because result matrices cannot be scaled per row:
// pass 1 finds each row's score maximum m, pass 2 forms p = exp(s - m) (f16 into workgroup memory), sums l and
// accumulates O += P V in result matrices held by the subgroups. Q is scaled and rounded to f16 once, K and V per
// tile. HEAD_DIM_128 selects D = 128 (else D = 64), the two head sizes the accumulators are written out for.
enable f16;
enable chromium_experimental_subgroup_matrix;

struct Params { tokens: u32, heads: u32, kvHeads: u32, headDim: u32, posBase: u32, window: u32, scale: f32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<f32>;
@group(0) @binding(2) var<storage, read> kc: array<f32>;
@group(0) @binding(3) var<storage, read> vc: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

#if HEAD_DIM_128
const D = 128u;
#else
const D = 64u;
#endif
const ROWS = 16u;
const BK = 32u;

var<workgroup> qs: array<f16, ROWS * D>;  // [ROWS][D]
var<workgroup> ks: array<f16, BK * D>;    // [BK][D]
var<workgroup> vs: array<f16, BK * D>;    // [BK][D]
var<workgroup> ss: array<f32, ROWS * BK>; // scores [ROWS][BK]; at the end, output staging
var<workgroup> ps: array<f16, ROWS * BK>; // probabilities [ROWS][BK]
var<workgroup> rowL: array<f32, ROWS>;

fn key_start(pos: u32) -> u32 {
  if (p.window == 0u || pos + 1u <= p.window) { return 0u; }
  return pos + 1u - p.window;
}

// Stages keys [k0, k0 + BK) (and their values when `values`) as f16; keys at or past `end` read as zero.
fn stage(k0: u32, end: u32, kvh: u32, lid: u32, values: bool) {
  for (var e = lid; e < BK * D; e += 32u) {
    let key = k0 + e / D;
    var kv = 0.0;
    var vv = 0.0;
    if (key < end) {
      let at = (key * p.kvHeads + kvh) * D + e % D;
      kv = kc[at];
      if (values) { vv = vc[at]; }
    }
    ks[e] = f16(kv);
    vs[e] = f16(vv);
  }
}

// S = Q K^T for the 16 rows and the tile's 32 keys, into ss.
fn scores() {
  var s0 = subgroup_matrix_result<f32, 16, 16>();
  var s1 = subgroup_matrix_result<f32, 16, 16>();
  for (var d0 = 0u; d0 < D; d0 += 16u) {
#if SGMAT_TEMPLATE
    let a = subgroupMatrixLoad<subgroup_matrix_left<f16, 16, 16>, row_major>(&qs, d0, D);
    let b0 = subgroupMatrixLoad<subgroup_matrix_right<f16, 16, 16>, col_major>(&ks, d0, D);
    let b1 = subgroupMatrixLoad<subgroup_matrix_right<f16, 16, 16>, col_major>(&ks, 16u * D + d0, D);
#else
    let a = subgroupMatrixLoad<subgroup_matrix_left<f16, 16, 16>>(&qs, d0, false, D);
    let b0 = subgroupMatrixLoad<subgroup_matrix_right<f16, 16, 16>>(&ks, d0, true, D);
    let b1 = subgroupMatrixLoad<subgroup_matrix_right<f16, 16, 16>>(&ks, 16u * D + d0, true, D);
#endif
    s0 = subgroupMatrixMultiplyAccumulate(a, b0, s0);
    s1 = subgroupMatrixMultiplyAccumulate(a, b1, s1);
  }
#if SGMAT_TEMPLATE
  subgroupMatrixStore<row_major>(&ss, 0u, s0, BK);
  subgroupMatrixStore<row_major>(&ss, 16u, s1, BK);
#else
  subgroupMatrixStore(&ss, 0u, s0, false, BK);
  subgroupMatrixStore(&ss, 16u, s1, false, BK);
#endif
}

@compute @workgroup_size(32)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32) {
  let group = p.heads / p.kvHeads;
  let kvh = wid.y;
  let lane = lid % 32u;
  let totalRows = p.tokens * group;
  let row0 = wid.x * ROWS;

  for (var e = lid; e < ROWS * D; e += 32u) {
    let r = row0 + e / D;
    var v = 0.0;
    if (r < totalRows) { v = q[((r / group) * p.heads + kvh * group + r % group) * D + e % D] * p.scale; }
    qs[e] = f16(v);
  }

  // This thread's row (threads 0..15) for the softmax steps.
  let myRow = row0 + lid;
  let mine = lid < ROWS && myRow < totalRows;
  let myPos = p.posBase + myRow / group;
  let myStart = key_start(myPos);
  let firstT = row0 / group;
  let lastT = (min(row0 + ROWS, totalRows) - 1u) / group;
  let wgStart = (key_start(p.posBase + firstT) / BK) * BK;
  let wgEnd = p.posBase + lastT + 1u;

  var m = -3.0e38;
  for (var k0 = wgStart; k0 < wgEnd; k0 += BK) {
    stage(k0, wgEnd, kvh, lid, false);
    workgroupBarrier();
    scores();
    workgroupBarrier();
    if (mine) {
      for (var j = 0u; j < BK; j++) {
        let key = k0 + j;
        if (key >= myStart && key <= myPos) { m = max(m, ss[lid * BK + j]); }
      }
    }
    workgroupBarrier();
  }

  var l = 0.0;
  var o0 = subgroup_matrix_result<f32, 16, 16>();
  var o1 = subgroup_matrix_result<f32, 16, 16>();
  var o2 = subgroup_matrix_result<f32, 16, 16>();
  var o3 = subgroup_matrix_result<f32, 16, 16>();
#if HEAD_DIM_128
  var o4 = subgroup_matrix_result<f32, 16, 16>();
  var o5 = subgroup_matrix_result<f32, 16, 16>();
  var o6 = subgroup_matrix_result<f32, 16, 16>();
  var o7 = subgroup_matrix_result<f32, 16, 16>();
#endif
  for (var k0 = wgStart; k0 < wgEnd; k0 += BK) {
    stage(k0, wgEnd, kvh, lid, true);
    workgroupBarrier();
    scores();
    workgroupBarrier();
    if (lid < ROWS) {
      for (var j = 0u; j < BK; j++) {
        let key = k0 + j;
        var w = 0.0;
        if (mine && key >= myStart && key <= myPos) { w = exp(ss[lid * BK + j] - m); }
        l += w;
        ps[lid * BK + j] = f16(w);
      }
    }
    workgroupBarrier();
    // O += P V: the 16 rows of P against V's 16-column blocks, 16 keys at a time.
    for (var kk = 0u; kk < BK; kk += 16u) {
#if SGMAT_TEMPLATE
      let a = subgroupMatrixLoad<subgroup_matrix_left<f16, 16, 16>, row_major>(&ps, kk, BK);
      o0 = subgroupMatrixMultiplyAccumulate(a, subgroupMatrixLoad<subgroup_matrix_right<f16, 16, 16>, row_major>(&vs, kk * D, D), o0);
      o1 = subgroupMatrixMultiplyAccumulate(a, subgroupMatrixLoad<subgroup_matrix_right<f16, 16, 16>, row_major>(&vs, kk * D + 16u, D), o1);
      o2 = subgroupMatrixMultiplyAccumulate(a, subgroupMatrixLoad<subgroup_matrix_right<f16, 16, 16>, row_major>(&vs, kk * D + 32u, D), o2);
      o3 = subgroupMatrixMultiplyAccumulate(a, subgroupMatrixLoad<subgroup_matrix_right<f16, 16, 16>, row_major>(&vs, kk * D + 48u, D), o3);
#if HEAD_DIM_128
      o4 = subgroupMatrixMultiplyAccumulate(a, subgroupMatrixLoad<subgroup_matrix_right<f16, 16, 16>, row_major>(&vs, kk * D + 64u, D), o4);
      o5 = subgroupMatrixMultiplyAccumulate(a, subgroupMatrixLoad<subgroup_matrix_right<f16, 16, 16>, row_major>(&vs, kk * D + 80u, D), o5);
      o6 = subgroupMatrixMultiplyAccumulate(a, subgroupMatrixLoad<subgroup_matrix_right<f16, 16, 16>, row_major>(&vs, kk * D + 96u, D), o6);
      o7 = subgroupMatrixMultiplyAccumulate(a, subgroupMatrixLoad<subgroup_matrix_right<f16, 16, 16>, row_major>(&vs, kk * D + 112u, D), o7);
#endif
#else
      let a = subgroupMatrixLoad<subgroup_matrix_left<f16, 16, 16>>(&ps, kk, false, BK);
      o0 = subgroupMatrixMultiplyAccumulate(a, subgroupMatrixLoad<subgroup_matrix_right<f16, 16, 16>>(&vs, kk * D, false, D), o0);
      o1 = subgroupMatrixMultiplyAccumulate(a, subgroupMatrixLoad<subgroup_matrix_right<f16, 16, 16>>(&vs, kk * D + 16u, false, D), o1);
      o2 = subgroupMatrixMultiplyAccumulate(a, subgroupMatrixLoad<subgroup_matrix_right<f16, 16, 16>>(&vs, kk * D + 32u, false, D), o2);
      o3 = subgroupMatrixMultiplyAccumulate(a, subgroupMatrixLoad<subgroup_matrix_right<f16, 16, 16>>(&vs, kk * D + 48u, false, D), o3);
#if HEAD_DIM_128
      o4 = subgroupMatrixMultiplyAccumulate(a, subgroupMatrixLoad<subgroup_matrix_right<f16, 16, 16>>(&vs, kk * D + 64u, false, D), o4);
      o5 = subgroupMatrixMultiplyAccumulate(a, subgroupMatrixLoad<subgroup_matrix_right<f16, 16, 16>>(&vs, kk * D + 80u, false, D), o5);
      o6 = subgroupMatrixMultiplyAccumulate(a, subgroupMatrixLoad<subgroup_matrix_right<f16, 16, 16>>(&vs, kk * D + 96u, false, D), o6);
      o7 = subgroupMatrixMultiplyAccumulate(a, subgroupMatrixLoad<subgroup_matrix_right<f16, 16, 16>>(&vs, kk * D + 112u, false, D), o7);
#endif
#endif
    }
    workgroupBarrier();
  }

  if (lid < ROWS) { rowL[lid] = l; }
  // Two 16-column blocks at a time go through ss, then the lanes write the 16 rows x 32 columns.
  for (var pair = 0u; pair < D / 32u; pair++) {
    // The pair's two blocks go to ss (the P V sums are done; ss is free).
    var left = o0;
    var right = o1;
    switch pair {
      case 1u: { left = o2; right = o3; }
#if HEAD_DIM_128
      case 2u: { left = o4; right = o5; }
      case 3u: { left = o6; right = o7; }
#endif
      default: {}
    }
#if SGMAT_TEMPLATE
    subgroupMatrixStore<row_major>(&ss, 0u, left, BK);
    subgroupMatrixStore<row_major>(&ss, 16u, right, BK);
#else
    subgroupMatrixStore(&ss, 0u, left, false, BK);
    subgroupMatrixStore(&ss, 16u, right, false, BK);
#endif
    workgroupBarrier();
    for (var i = 0u; i < 16u; i++) {
      let e = i * 32u + lane;
      let rl = e / 32u;
      let r = row0 + rl;
      if (r < totalRows) {
        let d = pair * 32u + e % 32u;
        out[((r / group) * p.heads + kvh * group + r % group) * D + d] = ss[rl * BK + e % 32u] / rowL[rl];
      }
    }
    workgroupBarrier();
  }
}
