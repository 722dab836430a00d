// out[t][c] = table[ids[t]][c]; with F16_WEIGHTS the table holds f16 pairs packed in u32 words, rows padded to even.
struct Params { tokens: u32, hidden: u32, rowWords: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> ids: array<u32>;
#if F16_WEIGHTS
@group(0) @binding(2) var<storage, read> table: array<u32>;
#else
@group(0) @binding(2) var<storage, read> table: array<f32>;
#endif
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let i = (wid.y * nwg.x + wid.x) * 256u + lid;
  if (i >= p.tokens * p.hidden) { return; }
  let t = i / p.hidden;
  let c = i % p.hidden;
  let id = ids[t];
#if F16_WEIGHTS
  out[i] = unpack2x16float(table[id * p.rowWords + c / 2u])[c & 1u];
#else
  out[i] = table[id * p.hidden + c];
#endif
}
