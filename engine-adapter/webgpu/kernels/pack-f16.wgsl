// Packs f32 rows [rows][cols] into f16 pairs in u32 words, odd rows padded with 0, as rows firstRow.. of the
// destination (uploads go in chunks of rows): [rows][rowWords], or with BLOCKS in weight blocks (blockWord).
#include "weight-blocks.wgsl"
struct PackParams { rows: u32, cols: u32, rowWords: u32, firstRow: u32 }
@group(0) @binding(0) var<uniform> pp: PackParams;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<u32>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let i = (wid.y * nwg.x + wid.x) * 256u + lid;
  if (i >= pp.rows * pp.rowWords) { return; }
  let row = i / pp.rowWords;
  let word = i % pp.rowWords;
  let c = word * 2u;
  let a = src[row * pp.cols + c];
  var b = 0.0;
  if (c + 1u < pp.cols) { b = src[row * pp.cols + c + 1u]; }
#if BLOCKS
  dst[blockWord(pp.firstRow + row, word, pp.rowWords)] = pack2x16float(vec2f(a, b));
#else
  dst[(pp.firstRow + row) * pp.rowWords + word] = pack2x16float(vec2f(a, b));
#endif
}
