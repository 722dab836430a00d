// Prefill attention on the tensor cores (16x16x16 f16 subgroup matrices, f32 accumulation). A workgroup is eight
// 32-wide subgroups over one kv head and 128 query rows, a row being (token, q head of that kv head's GQA group) as in
// attention.wgsl; subgroup s owns rows [16s, 16s + 16), so every K/V tile staged in workgroup memory serves 128 rows.
// (Staging K and V, converted to f16 one element at a time, was the largest cost with 64 rows per workgroup.) Each
// subgroup keeps its rows of Q in registers as left operands, staged once through the K/V tile's memory.
// Keys stream in tiles of BK = 32 over the workgroup's causal range only (tiles past its last row are never read); each
// tile's K and V come into registers during the tile before, then into workgroup memory as f16.
//
// One pass with a lazily raised reference maximum: result matrices cannot be scaled per row, so a row keeps its
// reference m until a tile's maximum exceeds it by more than RESCALE, and only then do the subgroups stage their
// accumulators through workgroup memory to scale them by 2^(m_old - m_new). Between raises p = 2^(s - m) stays
// below 2^RESCALE, well inside f16. With scaled scores this happens a few times per row, mostly in the first tiles.
// The softmax works in log2 units (scores times log2(e), in f32), so it takes exp2.
// HEAD_DIM_128 selects D = 128 (else D = 64), the two head sizes the register blocks are written out for.
//
// With SPLIT (flash-decoding, for a short query over long KV such as a question after injected context),
// workgroup z takes the z-th of p.splits BK-aligned parts of the key range and writes its unnormalised
// accumulator and (max, sum) to partAcc / partStats, laid out as attention.wgsl's SPLIT; attention-combine.wgsl
// merges the parts (the part's maximum is written back in natural-log units, as attention.wgsl writes it).
enable f16;
enable subgroups;
enable chromium_experimental_subgroup_matrix;
// Each subgroup loads its own rows' fragments, so matrix offsets differ between the subgroups of a workgroup. They
// are uniform within each subgroup, which is what the hardware needs; Tint's check asks for workgroup uniformity.
diagnostic(off, chromium.subgroup_matrix_uniformity);

#include "attention-common.wgsl"
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
const SUBGROUPS = 8u;
const ROWS = 16u;
const WG_ROWS = SUBGROUPS * ROWS;
const BK = 32u;
// Row stride of the staged tiles: 8 halves of padding shift successive rows by 4 banks, so the 16 rows a matrix
// load touches do not all hit the same banks (a stride of D would).
const DP = D + 8u;
const RESCALE = 11.0;
const LOG2E = 1.4426950408889634;
const LN2 = 0.6931471805599453;

// The K tile [BK][DP] then the V tile [BK][DP]; before the first tile, 64 rows of Q [64][DP] at a time.
var<workgroup> kv: array<f16, 2u * BK * DP>;
// Per subgroup [ROWS][BK]: scores, then 16-column blocks of the accumulator on their way to a rescale or the output.
var<workgroup> ss: array<f32, SUBGROUPS * ROWS * BK>;
// Per subgroup [ROWS][BK]: probabilities.
var<workgroup> ps: array<f16, SUBGROUPS * ROWS * BK>;
// Per row: the factor of the latest rescale; at the end, the row's sum.
var<workgroup> rowScale: array<f32, WG_ROWS>;
// Whether any row raised its maximum this tile (x). Every workgroup variable is a multiple of 16 bytes, so each array
// stays 16-byte aligned wherever the compiler places it: with a lone u32 here, matrix loads returned garbage on the
// H100.
var<workgroup> rescaleAny: vec4u;

// A subgroup-matrix store into ss, in the spelling this Dawn takes.
fn storeS(at: u32, m: subgroup_matrix_result<f32, 16, 16>) {
#if SGMAT_TEMPLATE
  subgroupMatrixStore<row_major>(&ss, at, m, BK);
#else
  subgroupMatrixStore(&ss, at, m, false, BK);
#endif
}

// Left operand: 16 rows of Q staged in kv from `at`, head dims from the offset within.
fn qTile(at: u32) -> subgroup_matrix_left<f16, 16, 16> {
#if SGMAT_TEMPLATE
  return subgroupMatrixLoad<subgroup_matrix_left<f16, 16, 16>, row_major>(&kv, at, DP);
#else
  return subgroupMatrixLoad<subgroup_matrix_left<f16, 16, 16>>(&kv, at, false, DP);
#endif
}

// Right operand K^T: keys [key, key + 16) of the staged tile, head dims [d0, d0 + 16).
fn kTile(key: u32, d0: u32) -> subgroup_matrix_right<f16, 16, 16> {
#if SGMAT_TEMPLATE
  return subgroupMatrixLoad<subgroup_matrix_right<f16, 16, 16>, col_major>(&kv, key * DP + d0, DP);
#else
  return subgroupMatrixLoad<subgroup_matrix_right<f16, 16, 16>>(&kv, key * DP + d0, true, DP);
#endif
}

// Right operand V: keys [key, key + 16) of the staged tile, head dims [d0, d0 + 16).
fn vTile(key: u32, d0: u32) -> subgroup_matrix_right<f16, 16, 16> {
#if SGMAT_TEMPLATE
  return subgroupMatrixLoad<subgroup_matrix_right<f16, 16, 16>, row_major>(&kv, BK * DP + key * DP + d0, DP);
#else
  return subgroupMatrixLoad<subgroup_matrix_right<f16, 16, 16>>(&kv, BK * DP + key * DP + d0, false, DP);
#endif
}

// A tile of keys [k0, k0 + BK) holds BK * D / 4 vec4s of K and as many of V; each thread loads KV_VECS of each.
// Element e of a tile is key k0 + e / (D / 4), head dims from (e % (D / 4)) * 4.
const KV_VECS = BK * D / 4u / (SUBGROUPS * 32u);

// Where element e of the tile from k0 sits in kc and vc (in vec4s), or -1 for keys at or past `end` (they read as zero).
fn kvAt(k0: u32, end: u32, kvh: u32, e: u32) -> i32 {
  let key = k0 + e / (D / 4u);
  if (key >= end) { return -1; }
  return i32(((key * p.kvHeads + kvh) * D + (e % (D / 4u)) * 4u) / 4u);
}

fn kLoad(at: i32) -> vec4f {
  if (at < 0) { return vec4f(0.0); }
  return kc[at];
}

fn vLoad(at: i32) -> vec4f {
  if (at < 0) { return vec4f(0.0); }
  return vc[at];
}

// Stores element e of a tile, K and V, into kv as f16.
fn stageKV(e: u32, kk: vec4f, vv: vec4f) {
  let to = (e / (D / 4u)) * DP + (e % (D / 4u)) * 4u;
  kv[to] = f16(kk.x);
  kv[to + 1u] = f16(kk.y);
  kv[to + 2u] = f16(kk.z);
  kv[to + 3u] = f16(kk.w);
  kv[BK * DP + to] = f16(vv.x);
  kv[BK * DP + to + 1u] = f16(vv.y);
  kv[BK * DP + to + 2u] = f16(vv.z);
  kv[BK * DP + to + 3u] = f16(vv.w);
}

// One 16x16 accumulator block scaled row by row by rowScale, through the subgroup's ss region at `sAt`.
fn rescaled(o: subgroup_matrix_result<f32, 16, 16>, sAt: u32, rowAt: u32, lane: u32) -> subgroup_matrix_result<f32, 16, 16> {
  storeS(sAt, o);
  workgroupBarrier();
  for (var e = lane; e < 256u; e += 32u) {
    let r = e / 16u;
    ss[sAt + r * BK + e % 16u] *= rowScale[rowAt + r];
  }
  workgroupBarrier();
#if SGMAT_TEMPLATE
  let back = subgroupMatrixLoad<subgroup_matrix_result<f32, 16, 16>, row_major>(&ss, sAt, BK);
#else
  let back = subgroupMatrixLoad<subgroup_matrix_result<f32, 16, 16>>(&ss, sAt, false, BK);
#endif
  workgroupBarrier();
  return back;
}

// Writes one 16x16 accumulator block (head dims [d0, d0 + 16)) of the subgroup's rows.
fn emit(o: subgroup_matrix_result<f32, 16, 16>, d0: u32, sAt: u32, rowAt: u32, sgRow0: u32, lane: u32, kvh: u32, group: u32, z: u32) {
  storeS(sAt, o);
  workgroupBarrier();
  for (var e = lane; e < 256u; e += 32u) {
    let rl = e / 16u;
    let r = sgRow0 + rl;
    if (r < p.tokens * group) {
      let row = (r / group) * p.heads + kvh * group + r % group;
      let v = ss[sAt + rl * BK + e % 16u];
#if SPLIT
      partAcc[(z * p.tokens * p.heads + row) * D + d0 + e % 16u] = v;
#else
      out[row * D + d0 + e % 16u] = v / rowScale[rowAt + rl];
#endif
    }
  }
  workgroupBarrier();
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32) {
  let group = p.heads / p.kvHeads;
  let kvh = wid.y;
  let sg = lid / 32u;
  let lane = lid % 32u;
  let totalRows = p.tokens * group;
  let row0 = wid.x * WG_ROWS;
  let sgRow0 = row0 + sg * ROWS;

  // Q scaled and rounded to f16, 64 rows at a time through kv, into the owning subgroup's registers.
  var q0 = subgroup_matrix_left<f16, 16, 16>();
  var q1 = subgroup_matrix_left<f16, 16, 16>();
  var q2 = subgroup_matrix_left<f16, 16, 16>();
  var q3 = subgroup_matrix_left<f16, 16, 16>();
#if HEAD_DIM_128
  var q4 = subgroup_matrix_left<f16, 16, 16>();
  var q5 = subgroup_matrix_left<f16, 16, 16>();
  var q6 = subgroup_matrix_left<f16, 16, 16>();
  var q7 = subgroup_matrix_left<f16, 16, 16>();
#endif
  for (var half = 0u; half < 2u; half++) {
    for (var e = lid; e < 64u * D; e += SUBGROUPS * 32u) {
      let r = row0 + half * 64u + e / D;
      var v = 0.0;
      if (r < totalRows) { v = q[((r / group) * p.heads + kvh * group + r % group) * D + e % D] * p.scale; }
      kv[(e / D) * DP + e % D] = f16(v);
    }
    workgroupBarrier();
    if (sg / 4u == half) {
      let at = (sg % 4u) * ROWS * DP;
      q0 = qTile(at);
      q1 = qTile(at + 16u);
      q2 = qTile(at + 32u);
      q3 = qTile(at + 48u);
#if HEAD_DIM_128
      q4 = qTile(at + 64u);
      q5 = qTile(at + 80u);
      q6 = qTile(at + 96u);
      q7 = qTile(at + 112u);
#endif
    }
    workgroupBarrier();
  }

  let firstT = row0 / group;
  let lastT = (min(row0 + WG_ROWS, totalRows) - 1u) / group;
#if SPLIT
  // Parts are whole tiles, so only the last one's final tile reaches past its end (where keys are past every row).
  let fullStart = (key_start(row_pos(firstT)) / BK) * BK;
  let fullEnd = row_pos(lastT) + 1u;
  let per = (((fullEnd - fullStart + p.splits - 1u) / p.splits + BK - 1u) / BK) * BK;
  let wgStart = min(fullEnd, fullStart + wid.z * per);
  let wgEnd = min(fullEnd, wgStart + per);
#else
  let wgStart = (key_start(row_pos(firstT)) / BK) * BK;
  let wgEnd = row_pos(lastT) + 1u;
#endif

  // The softmax steps: lanes r and r + 16 share row r of the subgroup, each taking 16 of a tile's keys.
  let r = lane % 16u;
  let j0 = (lane / 16u) * 16u;
  let myRow = sgRow0 + r;
  let live = myRow < totalRows;
  let myPos = row_pos(myRow / group);
  let myStart = key_start(myPos);
  let sAt = sg * ROWS * BK;
  let rowAt = sg * ROWS;
  var m = -3.0e38;
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

  // Each tile's K and V are loaded into registers while the tile before it is computed on, so the loads' latency
  // overlaps the products; the loop body only stores them into the staged tile.
  var kr: array<vec4f, KV_VECS>;
  var vr: array<vec4f, KV_VECS>;
  for (var v = 0u; v < KV_VECS; v++) {
    let at = kvAt(wgStart, wgEnd, kvh, lid + v * SUBGROUPS * 32u);
    kr[v] = kLoad(at);
    vr[v] = vLoad(at);
  }
  for (var k0 = wgStart; k0 < wgEnd; k0 += BK) {
    for (var v = 0u; v < KV_VECS; v++) { stageKV(lid + v * SUBGROUPS * 32u, kr[v], vr[v]); }
    workgroupBarrier();
    if (k0 + BK < wgEnd) {
      for (var v = 0u; v < KV_VECS; v++) {
        let at = kvAt(k0 + BK, wgEnd, kvh, lid + v * SUBGROUPS * 32u);
        kr[v] = kLoad(at);
        vr[v] = vLoad(at);
      }
    }
    // The previous tile's flag was read before this tile's staging barrier; raises below follow the next barrier.
    if (lid == 0u) { rescaleAny.x = 0u; }

    // S = Q K^T for the subgroup's 16 rows and the tile's 32 keys.
    var s0 = subgroup_matrix_result<f32, 16, 16>();
    var s1 = subgroup_matrix_result<f32, 16, 16>();
    s0 = subgroupMatrixMultiplyAccumulate(q0, kTile(0u, 0u), s0);
    s1 = subgroupMatrixMultiplyAccumulate(q0, kTile(16u, 0u), s1);
    s0 = subgroupMatrixMultiplyAccumulate(q1, kTile(0u, 16u), s0);
    s1 = subgroupMatrixMultiplyAccumulate(q1, kTile(16u, 16u), s1);
    s0 = subgroupMatrixMultiplyAccumulate(q2, kTile(0u, 32u), s0);
    s1 = subgroupMatrixMultiplyAccumulate(q2, kTile(16u, 32u), s1);
    s0 = subgroupMatrixMultiplyAccumulate(q3, kTile(0u, 48u), s0);
    s1 = subgroupMatrixMultiplyAccumulate(q3, kTile(16u, 48u), s1);
#if HEAD_DIM_128
    s0 = subgroupMatrixMultiplyAccumulate(q4, kTile(0u, 64u), s0);
    s1 = subgroupMatrixMultiplyAccumulate(q4, kTile(16u, 64u), s1);
    s0 = subgroupMatrixMultiplyAccumulate(q5, kTile(0u, 80u), s0);
    s1 = subgroupMatrixMultiplyAccumulate(q5, kTile(16u, 80u), s1);
    s0 = subgroupMatrixMultiplyAccumulate(q6, kTile(0u, 96u), s0);
    s1 = subgroupMatrixMultiplyAccumulate(q6, kTile(16u, 96u), s1);
    s0 = subgroupMatrixMultiplyAccumulate(q7, kTile(0u, 112u), s0);
    s1 = subgroupMatrixMultiplyAccumulate(q7, kTile(16u, 112u), s1);
#endif
    storeS(sAt, s0);
    storeS(sAt + 16u, s1);
    workgroupBarrier();

    // This lane's 16 scores of row r, read once; keys outside the row's causal window hold -3e38 and weigh nothing.
    let at = sAt + r * BK + j0;
    var sv: array<f32, 16>;
    var tileMax = -3.0e38;
    for (var jj = 0u; jj < 16u; jj++) {
      let key = k0 + j0 + jj;
      let s = select(-3.0e38, ss[at + jj] * LOG2E, live && key >= myStart && key <= myPos);
      sv[jj] = s;
      tileMax = max(tileMax, s);
    }
    tileMax = max(tileMax, subgroupShuffleXor(tileMax, 16u));
    var alpha = 1.0;
    if (tileMax > m + RESCALE) {
      alpha = exp2(m - tileMax);
      m = tileMax;
      rescaleAny.x = 1u;
    }
    l *= alpha;
    for (var jj = 0u; jj < 16u; jj++) {
      let s = sv[jj];
      let w = select(0.0, exp2(s - m), s > -1.0e38);
      l += w;
      ps[at + jj] = f16(w);
    }
    if (j0 == 0u) { rowScale[rowAt + r] = alpha; }
    // The load's barrier also publishes ps and rowScale. The first tile has nothing accumulated to scale.
    if (workgroupUniformLoad(&rescaleAny).x != 0u && k0 != wgStart) {
      o0 = rescaled(o0, sAt, rowAt, lane);
      o1 = rescaled(o1, sAt, rowAt, lane);
      o2 = rescaled(o2, sAt, rowAt, lane);
      o3 = rescaled(o3, sAt, rowAt, lane);
#if HEAD_DIM_128
      o4 = rescaled(o4, sAt, rowAt, lane);
      o5 = rescaled(o5, sAt, rowAt, lane);
      o6 = rescaled(o6, sAt, rowAt, lane);
      o7 = rescaled(o7, sAt, rowAt, lane);
#endif
    }

    // O += P V: the 16 rows of P against V's 16-column blocks, 16 keys at a time.
    for (var kk = 0u; kk < BK; kk += 16u) {
#if SGMAT_TEMPLATE
      let a = subgroupMatrixLoad<subgroup_matrix_left<f16, 16, 16>, row_major>(&ps, sAt + kk, BK);
#else
      let a = subgroupMatrixLoad<subgroup_matrix_left<f16, 16, 16>>(&ps, sAt + kk, false, BK);
#endif
      o0 = subgroupMatrixMultiplyAccumulate(a, vTile(kk, 0u), o0);
      o1 = subgroupMatrixMultiplyAccumulate(a, vTile(kk, 16u), o1);
      o2 = subgroupMatrixMultiplyAccumulate(a, vTile(kk, 32u), o2);
      o3 = subgroupMatrixMultiplyAccumulate(a, vTile(kk, 48u), o3);
#if HEAD_DIM_128
      o4 = subgroupMatrixMultiplyAccumulate(a, vTile(kk, 64u), o4);
      o5 = subgroupMatrixMultiplyAccumulate(a, vTile(kk, 80u), o5);
      o6 = subgroupMatrixMultiplyAccumulate(a, vTile(kk, 96u), o6);
      o7 = subgroupMatrixMultiplyAccumulate(a, vTile(kk, 112u), o7);
#endif
    }
    workgroupBarrier();
  }

  l += subgroupShuffleXor(l, 16u);
  if (j0 == 0u) { rowScale[rowAt + r] = l; }
#if SPLIT
  if (j0 == 0u && live) {
    let part = wid.z * p.tokens * p.heads + (myRow / group) * p.heads + kvh * group + myRow % group;
    partStats[2u * part] = m * LN2;
    partStats[2u * part + 1u] = l;
  }
#endif
  emit(o0, 0u, sAt, rowAt, sgRow0, lane, kvh, group, wid.z);
  emit(o1, 16u, sAt, rowAt, sgRow0, lane, kvh, group, wid.z);
  emit(o2, 32u, sAt, rowAt, sgRow0, lane, kvh, group, wid.z);
  emit(o3, 48u, sAt, rowAt, sgRow0, lane, kvh, group, wid.z);
#if HEAD_DIM_128
  emit(o4, 64u, sAt, rowAt, sgRow0, lane, kvh, group, wid.z);
  emit(o5, 80u, sAt, rowAt, sgRow0, lane, kvh, group, wid.z);
  emit(o6, 96u, sAt, rowAt, sgRow0, lane, kvh, group, wid.z);
  emit(o7, 112u, sAt, rowAt, sgRow0, lane, kvh, group, wid.z);
#endif
}
