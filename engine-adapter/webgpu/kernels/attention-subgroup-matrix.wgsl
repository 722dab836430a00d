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
//
// With SPLIT (flash-decoding, for a short query over long KV such as a question after injected context),
// workgroup z takes the z-th of p.splits BK-aligned parts of the key range and writes its unnormalised
// accumulator and (max, sum) to partAcc / partStats, laid out as attention.wgsl's SPLIT; attention-combine.wgsl
// merges the parts.
enable f16;
enable chromium_experimental_subgroup_matrix;

struct Params { tokens: u32, heads: u32, kvHeads: u32, headDim: u32, posBase: u32, window: u32, scale: f32, splits: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<f32>;
@group(0) @binding(2) var<storage, read> kc: array<vec4f>;
@group(0) @binding(3) var<storage, read> vc: array<vec4f>;
#if SPLIT
@group(0) @binding(4) var<storage, read_write> partAcc: array<f32>;
@group(0) @binding(5) var<storage, read_write> partStats: array<f32>;
#else
@group(0) @binding(4) var<storage, read_write> out: array<f32>;
#endif

#if HEAD_DIM_128
const D = 128u;
#else
const D = 64u;
#endif
const ROWS = 16u;
const BK = 32u;
// Row stride of the staged tiles: 8 halves of padding shift successive rows by 4 banks, so the 16 rows a matrix
// load touches do not all hit the same banks (a stride of D would).
const DP = D + 8u;

var<workgroup> qs: array<f16, ROWS * DP>; // [ROWS][DP]
var<workgroup> ks: array<f16, BK * DP>;   // [BK][DP]
var<workgroup> vs: array<f16, BK * DP>;   // [BK][DP]
var<workgroup> ss: array<f32, ROWS * BK>; // scores [ROWS][BK]; at the end, output staging
var<workgroup> ps: array<f16, ROWS * BK>; // probabilities [ROWS][BK]
var<workgroup> rowL: array<f32, ROWS>;
#if SPLIT
var<workgroup> rowM: array<f32, ROWS>;
#endif

fn key_start(pos: u32) -> u32 {
  if (p.window == 0u || pos + 1u <= p.window) { return 0u; }
  return pos + 1u - p.window;
}

// Stages keys [k0, k0 + BK) (and their values when `values`) as f16; keys at or past `end` read as zero.
fn stage(k0: u32, end: u32, kvh: u32, lid: u32, values: bool) {
  for (var e = lid; e < BK * D / 4u; e += 32u) {
    let j = e / (D / 4u);
    let d = (e % (D / 4u)) * 4u;
    let key = k0 + j;
    var kv = vec4f(0.0);
    var vv = vec4f(0.0);
    if (key < end) {
      let at = ((key * p.kvHeads + kvh) * D + d) / 4u;
      kv = kc[at];
      if (values) { vv = vc[at]; }
    }
    let to = j * DP + d;
    ks[to] = f16(kv.x);
    ks[to + 1u] = f16(kv.y);
    ks[to + 2u] = f16(kv.z);
    ks[to + 3u] = f16(kv.w);
    if (values) {
      vs[to] = f16(vv.x);
      vs[to + 1u] = f16(vv.y);
      vs[to + 2u] = f16(vv.z);
      vs[to + 3u] = f16(vv.w);
    }
  }
}

// S = Q K^T for the 16 rows and the tile's 32 keys, into ss.
fn scores() {
  var s0 = subgroup_matrix_result<f32, 16, 16>();
  var s1 = subgroup_matrix_result<f32, 16, 16>();
  for (var d0 = 0u; d0 < D; d0 += 16u) {
#if SGMAT_TEMPLATE
    let a = subgroupMatrixLoad<subgroup_matrix_left<f16, 16, 16>, row_major>(&qs, d0, DP);
    let b0 = subgroupMatrixLoad<subgroup_matrix_right<f16, 16, 16>, col_major>(&ks, d0, DP);
    let b1 = subgroupMatrixLoad<subgroup_matrix_right<f16, 16, 16>, col_major>(&ks, 16u * DP + d0, DP);
#else
    let a = subgroupMatrixLoad<subgroup_matrix_left<f16, 16, 16>>(&qs, d0, false, DP);
    let b0 = subgroupMatrixLoad<subgroup_matrix_right<f16, 16, 16>>(&ks, d0, true, DP);
    let b1 = subgroupMatrixLoad<subgroup_matrix_right<f16, 16, 16>>(&ks, 16u * DP + d0, true, DP);
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
    qs[(e / D) * DP + e % D] = f16(v);
  }

  // This thread's row (threads 0..15) for the softmax steps.
  let myRow = row0 + lid;
  let mine = lid < ROWS && myRow < totalRows;
  let myPos = p.posBase + myRow / group;
  let myStart = key_start(myPos);
  let firstT = row0 / group;
  let lastT = (min(row0 + ROWS, totalRows) - 1u) / group;
#if SPLIT
  // Parts are whole tiles, so only the last one's final tile reaches past its end (where keys are past every row).
  let fullStart = (key_start(p.posBase + firstT) / BK) * BK;
  let fullEnd = p.posBase + lastT + 1u;
  let per = (((fullEnd - fullStart + p.splits - 1u) / p.splits + BK - 1u) / BK) * BK;
  let wgStart = min(fullEnd, fullStart + wid.z * per);
  let wgEnd = min(fullEnd, wgStart + per);
#else
  let wgStart = (key_start(p.posBase + firstT) / BK) * BK;
  let wgEnd = p.posBase + lastT + 1u;
#endif

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
      o0 = subgroupMatrixMultiplyAccumulate(a, subgroupMatrixLoad<subgroup_matrix_right<f16, 16, 16>, row_major>(&vs, kk * DP, DP), o0);
      o1 = subgroupMatrixMultiplyAccumulate(a, subgroupMatrixLoad<subgroup_matrix_right<f16, 16, 16>, row_major>(&vs, kk * DP + 16u, DP), o1);
      o2 = subgroupMatrixMultiplyAccumulate(a, subgroupMatrixLoad<subgroup_matrix_right<f16, 16, 16>, row_major>(&vs, kk * DP + 32u, DP), o2);
      o3 = subgroupMatrixMultiplyAccumulate(a, subgroupMatrixLoad<subgroup_matrix_right<f16, 16, 16>, row_major>(&vs, kk * DP + 48u, DP), o3);
#if HEAD_DIM_128
      o4 = subgroupMatrixMultiplyAccumulate(a, subgroupMatrixLoad<subgroup_matrix_right<f16, 16, 16>, row_major>(&vs, kk * DP + 64u, DP), o4);
      o5 = subgroupMatrixMultiplyAccumulate(a, subgroupMatrixLoad<subgroup_matrix_right<f16, 16, 16>, row_major>(&vs, kk * DP + 80u, DP), o5);
      o6 = subgroupMatrixMultiplyAccumulate(a, subgroupMatrixLoad<subgroup_matrix_right<f16, 16, 16>, row_major>(&vs, kk * DP + 96u, DP), o6);
      o7 = subgroupMatrixMultiplyAccumulate(a, subgroupMatrixLoad<subgroup_matrix_right<f16, 16, 16>, row_major>(&vs, kk * DP + 112u, DP), o7);
#endif
#else
      let a = subgroupMatrixLoad<subgroup_matrix_left<f16, 16, 16>>(&ps, kk, false, BK);
      o0 = subgroupMatrixMultiplyAccumulate(a, subgroupMatrixLoad<subgroup_matrix_right<f16, 16, 16>>(&vs, kk * DP, false, DP), o0);
      o1 = subgroupMatrixMultiplyAccumulate(a, subgroupMatrixLoad<subgroup_matrix_right<f16, 16, 16>>(&vs, kk * DP + 16u, false, DP), o1);
      o2 = subgroupMatrixMultiplyAccumulate(a, subgroupMatrixLoad<subgroup_matrix_right<f16, 16, 16>>(&vs, kk * DP + 32u, false, DP), o2);
      o3 = subgroupMatrixMultiplyAccumulate(a, subgroupMatrixLoad<subgroup_matrix_right<f16, 16, 16>>(&vs, kk * DP + 48u, false, DP), o3);
#if HEAD_DIM_128
      o4 = subgroupMatrixMultiplyAccumulate(a, subgroupMatrixLoad<subgroup_matrix_right<f16, 16, 16>>(&vs, kk * DP + 64u, false, DP), o4);
      o5 = subgroupMatrixMultiplyAccumulate(a, subgroupMatrixLoad<subgroup_matrix_right<f16, 16, 16>>(&vs, kk * DP + 80u, false, DP), o5);
      o6 = subgroupMatrixMultiplyAccumulate(a, subgroupMatrixLoad<subgroup_matrix_right<f16, 16, 16>>(&vs, kk * DP + 96u, false, DP), o6);
      o7 = subgroupMatrixMultiplyAccumulate(a, subgroupMatrixLoad<subgroup_matrix_right<f16, 16, 16>>(&vs, kk * DP + 112u, false, DP), o7);
#endif
#endif
    }
    workgroupBarrier();
  }

  if (lid < ROWS) { rowL[lid] = l; }
#if SPLIT
  if (lid < ROWS) { rowM[lid] = m; }
#endif
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
        let row = (r / group) * p.heads + kvh * group + r % group;
#if SPLIT
        let part = wid.z * p.tokens * p.heads + row;
        partAcc[part * D + d] = ss[rl * BK + e % 32u];
        if (pair == 0u && e % 32u == 0u) {
          partStats[2u * part] = rowM[rl];
          partStats[2u * part + 1u] = rowL[rl];
        }
#else
        out[row * D + d] = ss[rl * BK + e % 32u] / rowL[rl];
#endif
      }
    }
    workgroupBarrier();
  }
}
