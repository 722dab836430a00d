// Causal attention over a token-major KV cache, flash-attention style: K/V are streamed through workgroup memory in
// tiles of BK keys with an online softmax, so no [queries][keys] score matrix exists anywhere.
//
// A workgroup takes one kv head and ROWS query rows (16 unless set), a row being (token, q head of that kv head's GQA
// group), so the group shares each K/V tile. The 64 threads split into SLICES = 64 / ROWS per row, each owning every
// SLICES-th dimension of the head: fewer rows, more threads per row, shorter chains of dependent steps per thread.
// Query t sits at absolute position posBase + t (with SLOTS: slots[t]) and sees keys [max(0, pos + 1 - window), pos]
// (window 0: all).
//
// With SPLIT (flash-decoding, for few query rows over long KV), workgroup z takes the z-th of p.splits parts of
// the workgroup's key range and writes its unnormalised accumulator and (max, sum) to partAcc / partStats;
// attention-combine.wgsl merges the parts.
//
// With RAGGED (always with SPLIT), one dispatch serves many sequences of a batched step, each a few rows that fit
// one workgroup: workgroup x takes sequence x of the table `seqs`, whose keys and values are ranges of the bound
// kc / vc (cache blocks that several sequences share, kv-buffer-pool.ts). p.tokens is then the number of stacked
// rows the part buffers hold.
#include "attention-common.wgsl"
@group(0) @binding(1) var<storage, read> q: array<f32>;
@group(0) @binding(2) var<storage, read> kc: array<f32>;
@group(0) @binding(3) var<storage, read> vc: array<f32>;
#if SPLIT
@group(0) @binding(4) var<storage, read_write> partAcc: array<f32>;
@group(0) @binding(5) var<storage, read_write> partStats: array<f32>;
#if RAGGED
// Per sequence: its first row in q and the parts, its rows, the position of its first row, and where its keys and
// values start in kc and vc (in floats).
@group(0) @binding(6) var<storage, read> seqs: array<u32>;
#endif
#else
@group(0) @binding(4) var<storage, read_write> out: array<f32>;
#endif

// The absolute position of row t of workgroup x's sequence.
fn pos_of(x: u32, t: u32) -> u32 {
#if RAGGED
  return seqs[x * 5u + 2u] + t;
#else
  return row_pos(t);
#endif
}

override BK: u32 = 16u;       // keys per tile
override TILE: u32 = 2048u;   // BK * headDim
override DOTS: u32 = 1024u;   // ROWS * SLICES * BK = 64 * BK
override ROWS: u32 = 16u;     // 1, 2, 4, 8 or 16
override SLICES: u32 = 64u / ROWS;
const MAX_DPT = 64u;          // headDim <= 256 at 4 slices (16 rows); more slices, fewer dimensions each
const MAX_BK = 32u;

var<workgroup> ks: array<f32, TILE>;
var<workgroup> vs: array<f32, TILE>;
var<workgroup> dots: array<f32, DOTS>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32) {
#if RAGGED
  let entry = wid.x * 5u;
  let seqRow = seqs[entry];
  let tokens = seqs[entry + 1u];
  let kBase = seqs[entry + 3u];
  let vBase = seqs[entry + 4u];
  let tileRow = 0u;
#else
  let seqRow = 0u;
  let tokens = p.tokens;
  let kBase = 0u;
  let vBase = 0u;
  let tileRow = wid.x * ROWS;
#endif
  let group = p.heads / p.kvHeads;
  let kvh = wid.y;
  let D = p.headDim;
  let rowLocal = lid / SLICES;
  let slice = lid % SLICES;
  let totalRows = tokens * group;
  let rowGlobal = tileRow + rowLocal;
  let valid = rowGlobal < totalRows;
  let t = rowGlobal / group;
  let head = kvh * group + rowGlobal % group;
  let pos = pos_of(wid.x, t);
  let kStart = key_start(pos);
  let kEnd = pos + 1u;
  let dpt = (D + SLICES - 1u) / SLICES;

  var qv: array<f32, MAX_DPT>;
  var acc: array<f32, MAX_DPT>;
  if (valid) {
    let qb = ((seqRow + t) * p.heads + head) * D;
    for (var j = 0u; j < dpt; j++) {
      let d = slice + j * SLICES;
      if (d < D) { qv[j] = q[qb + d] * p.scale; }
    }
  }

  // The key range of the whole workgroup, from its first and last rows (uniform: depends on wid only).
  let firstT = tileRow / group;
  let lastT = (min(tileRow + ROWS, totalRows) - 1u) / group;
#if SPLIT
  let fullStart = key_start(pos_of(wid.x, firstT));
  let fullEnd = pos_of(wid.x, lastT) + 1u;
  let per = (((fullEnd - fullStart + p.splits - 1u) / p.splits + BK - 1u) / BK) * BK;
  let wgStart = min(fullEnd, fullStart + wid.z * per);
  let wgEnd = min(fullEnd, wgStart + per);
#else
  let wgStart = key_start(pos_of(wid.x, firstT));
  let wgEnd = pos_of(wid.x, lastT) + 1u;
#endif

  var m = -3.0e38;
  var l = 0.0;
  var scores: array<f32, MAX_BK>;
  for (var k0 = wgStart; k0 < wgEnd; k0 += BK) {
    for (var e = lid; e < BK * D; e += 64u) {
      let key = k0 + e / D;
      var kv = 0.0;
      var vv = 0.0;
      if (key < wgEnd) {
        let at = (key * p.kvHeads + kvh) * D + e % D;
        kv = kc[kBase + at];
        vv = vc[vBase + at];
      }
      ks[e] = kv;
      vs[e] = vv;
    }
    workgroupBarrier();
    for (var j = 0u; j < BK; j++) {
      var s = 0.0;
      for (var jd = 0u; jd < dpt; jd++) {
        let d = slice + jd * SLICES;
        if (d < D) { s = fma(qv[jd], ks[j * D + d], s); }
      }
      dots[(rowLocal * BK + j) * SLICES + slice] = s;
    }
    workgroupBarrier();
    // Each thread of a row sums the slices' parts of every SLICES-th key's dot, into the first slice's place.
    for (var j = slice; j < BK; j += SLICES) {
      let b = (rowLocal * BK + j) * SLICES;
      var s = 0.0;
      for (var i = 0u; i < SLICES; i++) { s += dots[b + i]; }
      dots[b] = s;
    }
    workgroupBarrier();
    var tileMax = -3.0e38;
    var seen = false;
    for (var j = 0u; j < BK; j++) {
      let key = k0 + j;
      let s = dots[(rowLocal * BK + j) * SLICES];
      let visible = valid && key >= kStart && key < kEnd;
      scores[j] = select(-3.0e38, s, visible);
      if (visible) {
        tileMax = max(tileMax, s);
        seen = true;
      }
    }
    if (seen) {
      let mNew = max(m, tileMax);
      let correction = exp(m - mNew);
      l *= correction;
      for (var jd = 0u; jd < dpt; jd++) { acc[jd] *= correction; }
      for (var j = 0u; j < BK; j++) {
        let key = k0 + j;
        if (key < kStart || key >= kEnd) { continue; }
        let w = exp(scores[j] - mNew);
        l += w;
        for (var jd = 0u; jd < dpt; jd++) {
          let d = slice + jd * SLICES;
          if (d < D) { acc[jd] = fma(w, vs[j * D + d], acc[jd]); }
        }
      }
      m = mNew;
    }
    workgroupBarrier();
  }

  if (valid) {
#if SPLIT
    let part = wid.z * p.tokens * p.heads + (seqRow + t) * p.heads + head;
    for (var jd = 0u; jd < dpt; jd++) {
      let d = slice + jd * SLICES;
      if (d < D) { partAcc[part * D + d] = acc[jd]; }
    }
    if (slice == 0u) {
      partStats[2u * part] = m;
      partStats[2u * part + 1u] = l;
    }
#else
    let ob = (t * p.heads + head) * D;
    for (var jd = 0u; jd < dpt; jd++) {
      let d = slice + jd * SLICES;
      if (d < D) { out[ob + d] = acc[jd] / l; }
    }
#endif
  }
}
