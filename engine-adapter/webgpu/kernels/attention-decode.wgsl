// Attention of one query token (a decode step) over a token-major KV cache, flash-decoding style: workgroup
// (x, y) takes part x of the visible key range for kv head y and every query head of that head's GQA group, and
// writes the part's unnormalised accumulator and (max, sum) for attention-combine.wgsl to merge.
//
// Unlike attention.wgsl, whose workgroups hold 16 query rows and walk a key tile per step (one row leaves most of
// them idle and every thread a long chain of dependent steps), the 64 threads here work across keys: each scores
// one key of a pass of 64 for all heads of the group, then each owns every 64th dimension and accumulates the
// pass's weighted values.
#include "attention-common.wgsl"
@group(0) @binding(1) var<storage, read> q: array<f32>;
@group(0) @binding(2) var<storage, read> kc: array<f32>;
@group(0) @binding(3) var<storage, read> vc: array<f32>;
@group(0) @binding(4) var<storage, read_write> partAcc: array<f32>;
@group(0) @binding(5) var<storage, read_write> partStats: array<f32>;

const THREADS = 64u;
const MAX_GROUP = 8u;   // query heads per kv head
const MAX_DIM = 256u;
const DPT = 4u;         // MAX_DIM / THREADS: dimensions per thread

var<workgroup> qs: array<f32, 2048>;      // MAX_GROUP * MAX_DIM: the group's queries, scaled
var<workgroup> w: array<f32, 512>;        // MAX_GROUP * THREADS: the pass's scores, then its weights

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32) {
  let g = p.heads / p.kvHeads;
  let kvh = wid.y;
  let D = p.headDim;
  let pos = p.posBase;
  let first = key_start(pos);
  let end = pos + 1u;
  let per = (end - first + p.splits - 1u) / p.splits;
  let s0 = min(end, first + wid.x * per);
  let s1 = min(end, s0 + per);

  for (var e = lid; e < g * D; e += THREADS) { qs[e] = q[kvh * g * D + e] * p.scale; }
  workgroupBarrier();

  var m: array<f32, MAX_GROUP>;
  var l: array<f32, MAX_GROUP>;
  var acc: array<f32, 32>;                // MAX_GROUP * DPT
  var s: array<f32, MAX_GROUP>;
  var mNew: array<f32, MAX_GROUP>;
  for (var h = 0u; h < MAX_GROUP; h++) { m[h] = -3.0e38; }

  for (var k0 = s0; k0 < s1; k0 += THREADS) {
    // This thread's key, scored against every head of the group.
    let key = k0 + lid;
    let live = key < s1;
    for (var h = 0u; h < MAX_GROUP; h++) { s[h] = 0.0; }
    if (live) {
      let base = (key * p.kvHeads + kvh) * D;
      for (var d = 0u; d < D; d++) {
        let k = kc[base + d];
        for (var h = 0u; h < g; h++) { s[h] = fma(qs[h * D + d], k, s[h]); }
      }
    }
    for (var h = 0u; h < g; h++) { w[h * THREADS + lid] = select(-3.0e38, s[h], live); }
    workgroupBarrier();
    // Every thread finds the same maxima (uniform), so each can rescale its own accumulators.
    let keys = min(THREADS, s1 - k0);
    for (var h = 0u; h < g; h++) {
      var big = m[h];
      for (var j = 0u; j < keys; j++) { big = max(big, w[h * THREADS + j]); }
      mNew[h] = big;
    }
    workgroupBarrier();
    for (var h = 0u; h < g; h++) {
      w[h * THREADS + lid] = select(0.0, exp(s[h] - mNew[h]), live);
      let correction = exp(m[h] - mNew[h]);
      l[h] *= correction;
      for (var i = 0u; i < DPT; i++) { acc[h * DPT + i] *= correction; }
      m[h] = mNew[h];
    }
    workgroupBarrier();
    for (var j = 0u; j < keys; j++) {
      let row = ((k0 + j) * p.kvHeads + kvh) * D;
      for (var h = 0u; h < g; h++) { l[h] += w[h * THREADS + j]; }
      for (var i = 0u; i < DPT; i++) {
        let d = lid + i * THREADS;
        if (d < D) {
          let v = vc[row + d];
          for (var h = 0u; h < g; h++) { acc[h * DPT + i] = fma(w[h * THREADS + j], v, acc[h * DPT + i]); }
        }
      }
    }
    workgroupBarrier();
  }

  // Part rows as attention.wgsl's SPLIT writes them: [part][token 0][head].
  for (var h = 0u; h < g; h++) {
    let part = wid.x * p.heads + kvh * g + h;
    for (var i = 0u; i < DPT; i++) {
      let d = lid + i * THREADS;
      if (d < D) { partAcc[part * D + d] = acc[h * DPT + i]; }
    }
    if (lid == 0u) {
      partStats[2u * part] = m[h];
      partStats[2u * part + 1u] = l[h];
    }
  }
}
