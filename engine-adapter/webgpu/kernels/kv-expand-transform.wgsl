// Expands transform-codec KV layer blocks (storage/kv-object/codecs/transform-table.ts gives the format) into a
// layer's f32 key and value caches: x[t][d] = mean[d] + sum_j basis[j][d] * (u[t][j] * step[j] + offset[j]).
// A block holds 2 * heads sections (keys h0.., values h0..), each the bit-packed codes of all tokens, token-major,
// rowBits bits a token, LSB-first in little-endian u32 words, each section whole words.
//
// Workgroup (x: token tile, y: section, z: job): TILE_T tokens of one head of one block. Components are taken
// JT at a time: their basis rows and the tile's dequantized codes (component-major, 4 tokens a vec4) go to
// workgroup memory, then each thread adds them into a TT-token x 4-channel register tile. Only components before
// `rank` are visited: those after it carry no bits (fitted tables give the leading, high-variance components the
// bits), and the constant part of zero-bit components (basis * offset) is folded into `mean` by the host, so inside
// the rank a zero-bit code is 0.
#include "expand-jobs.wgsl"

struct Params {
  tokens: u32, heads: u32, layer: u32, pad: u32,
  jobs: array<vec4u, MAX_JOBS>,
}
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<u32>;
@group(0) @binding(2) var<storage, read_write> keys: array<vec4f>;
@group(0) @binding(3) var<storage, read_write> values: array<vec4f>;
// [layer][tensor][head][component][headDim / 4]: rows of the orthonormal basis.
@group(0) @binding(4) var<storage, read> basis: array<vec4f>;
// [layer][tensor][head][headDim / 4]: the mean plus the zero-bit components' constant part, for one level.
@group(0) @binding(5) var<storage, read> mean: array<vec4f>;
// [layer][tensor][head]: (rowBits, rank, 0, 0) for one level.
@group(0) @binding(6) var<storage, read> headInfo: array<vec4u>;
// [layer][tensor][head][component]: (bit offset in the row, bits, step as f32 bits, offset as f32 bits).
@group(0) @binding(7) var<storage, read> comps: array<vec4u>;

override HEAD_DIM: u32 = 128u;
// Tokens each thread accumulates (kv-expand-transform.ts holds the same).
const TT: u32 = 8u;
const WG: u32 = 256u;
// Components per workgroup-memory tile.
const JT: u32 = 16u;
override COLS: u32 = HEAD_DIM / 4u;
override TOKEN_GROUPS: u32 = min(WG / COLS, 16u);
override TILE_T: u32 = TOKEN_GROUPS * TT;
// Vec4s of codes per component in the tile.
override QUADS: u32 = TILE_T / 4u;

var<workgroup> basisTile: array<vec4f, JT * COLS>;
// [component][token / 4]: whole vec4s, each written by one thread (a write to one component of a vector in memory
// may rewrite the whole vector).
var<workgroup> codeTile: array<vec4f, JT * QUADS>;
var<workgroup> sharedRank: u32;

// Code of component `c` (its comps entry) of token t, in the section starting at word `start`.
fn code(start: u32, rowBits: u32, t: u32, c: vec4u) -> f32 {
  if (c.y == 0u) { return 0.0; }
  let bit = t * rowBits + c.x;
  let w = start + (bit >> 5u);
  let sh = bit & 31u;
  var u = src[w] >> sh;
  // A code may straddle two words (sh > 0 then, so the shift below is < 32).
  if (sh + c.y > 32u) { u |= src[w + 1u] << (32u - sh); }
  let mask = select((1u << c.y) - 1u, 0xffffffffu, c.y >= 32u);
  return fma(f32(u & mask), bitcast<f32>(c.z), bitcast<f32>(c.w));
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32) {
  let job = p.jobs[wid.z];
  let section = wid.y;
  let h = section % p.heads;
  let head = p.layer * 2u * p.heads + section;
  let info = headInfo[head];
  let rowBits = info.x;
  if (lid == 0u) { sharedRank = info.y; }
  // The loop over components holds barriers, so its bound must be uniform in the workgroup's analysis.
  let rank = workgroupUniformLoad(&sharedRank);

  var start = job.x >> 2u;
  for (var g = 0u; g < section; g++) {
    start += (p.tokens * headInfo[p.layer * 2u * p.heads + g].x + 31u) >> 5u;
  }

  let t0 = wid.x * TILE_T;
  let col = lid % COLS;
  let group = lid / COLS;
  let inTile = group < TOKEN_GROUPS;
  let m = mean[head * COLS + col];
  var acc: array<vec4f, TT>;
  for (var k = 0u; k < TT; k++) { acc[k] = m; }

  for (var j0 = 0u; j0 < rank; j0 += JT) {
    for (var i = lid; i < JT * COLS; i += WG) {
      let j = j0 + i / COLS;
      basisTile[i] = select(vec4f(0.0), basis[(head * HEAD_DIM + j) * COLS + i % COLS], j < rank);
    }
    for (var i = lid; i < JT * QUADS; i += WG) {
      let j = j0 + i / QUADS;
      let t = t0 + (i % QUADS) * 4u;
      var c = vec4f(0.0);
      if (j < rank) {
        let comp = comps[head * HEAD_DIM + j];
        for (var e = 0u; e < 4u; e++) {
          if (t + e < p.tokens) { c[e] = code(start, rowBits, t + e, comp); }
        }
      }
      codeTile[i] = c;
    }
    workgroupBarrier();
    if (inTile) {
      for (var jj = 0u; jj < JT; jj++) {
        let b = basisTile[jj * COLS + col];
        for (var q = 0u; q < TT / 4u; q++) {
          let c = codeTile[jj * QUADS + group * (TT / 4u) + q];
          acc[4u * q] = fma(vec4f(c.x), b, acc[4u * q]);
          acc[4u * q + 1u] = fma(vec4f(c.y), b, acc[4u * q + 1u]);
          acc[4u * q + 2u] = fma(vec4f(c.z), b, acc[4u * q + 2u]);
          acc[4u * q + 3u] = fma(vec4f(c.w), b, acc[4u * q + 3u]);
        }
      }
    }
    workgroupBarrier();
  }

  if (!inTile) { return; }
  let isKeys = section < p.heads;
  for (var k = 0u; k < TT; k++) {
    let t = t0 + group * TT + k;
    if (t >= p.tokens) { break; }
    let dst = (job.y >> 2u) + (t * p.heads + h) * COLS + col;
    if (isKeys) { keys[dst] = acc[k]; } else { values[dst] = acc[k]; }
  }
}
