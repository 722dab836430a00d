// Packs f32 rows [rows][cols] into f16 pairs in u32 words [rows][rowWords], odd rows padded with 0, writing at a
// word offset of the destination (uploads go in chunks of rows).
struct Params { rows: u32, cols: u32, rowWords: u32, dstOffset: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<u32>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let i = (wid.y * nwg.x + wid.x) * 256u + lid;
  if (i >= p.rows * p.rowWords) { return; }
  let row = i / p.rowWords;
  let c = (i % p.rowWords) * 2u;
  let a = src[row * p.cols + c];
  var b = 0.0;
  if (c + 1u < p.cols) { b = src[row * p.cols + c + 1u]; }
  dst[p.dstOffset + i] = pack2x16float(vec2f(a, b));
}
