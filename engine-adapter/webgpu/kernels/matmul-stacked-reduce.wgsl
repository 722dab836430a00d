// The second step of a split-K product over stacked weights (matmul-stacked.ts): each output's K parts summed as
// matmul-split-reduce.wgsl sums them, then stored where its part of the stack goes. Parts are laid out
// [part][row][width] (width: the stack's rows), part 0 holding the bias.
// COLUMNS: the stack is q, k and v, columns [0, split0), [split0, split1) and [split1, width); each goes to its own
// buffer, [row][its width].
// ROPE_KV: the stack is q, k and v as for COLUMNS, and the layer's KV step is done here too: q and k rotated (RoPE, as
// rope.wgsl), q to its buffer, k and v into the layer's caches at each row's position (as kv-write.wgsl). A thread
// takes a pair of a row's columns: a rotation pair of q or k (i, i + headDim / 2 within a head), or two columns of v.
// Otherwise the stack is gate then up, halves of the width, and y = silu(gate) * up.
struct Params { rows: u32, width: u32, parts: u32, split0: u32, split1: u32, headDim: u32, posBase: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> part: array<f32>;
#if COLUMNS
@group(0) @binding(2) var<storage, read_write> y0: array<f32>;
@group(0) @binding(3) var<storage, read_write> y1: array<f32>;
@group(0) @binding(4) var<storage, read_write> y2: array<f32>;
#else
#if ROPE_KV
#include "rope-common.wgsl"
@group(0) @binding(2) var<storage, read_write> q: array<f32>;
@group(0) @binding(3) var<storage, read_write> cacheK: array<f32>;
@group(0) @binding(4) var<storage, read_write> cacheV: array<f32>;
@group(0) @binding(5) var<storage, read> invFreq: array<f32>;
#if SLOTS
@group(0) @binding(6) var<storage, read> slots: array<u32>;
fn position(t: u32) -> u32 { return slots[t]; }
#else
fn position(t: u32) -> u32 { return p.posBase + t; }
#endif
#else
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
#endif
#endif

fn total(i: u32) -> f32 {
  let count = p.rows * p.width;
  var v = 0.0;
  for (var s = 0u; s < p.parts; s++) { v += part[s * count + i]; }
  return v;
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let i = (wid.y * nwg.x + wid.x) * 256u + lid;
#if COLUMNS
  if (i >= p.rows * p.width) { return; }
  let row = i / p.width;
  let col = i % p.width;
  let v = total(i);
  if (col < p.split0) {
    y0[row * p.split0 + col] = v;
  } else if (col < p.split1) {
    y1[row * (p.split1 - p.split0) + col - p.split0] = v;
  } else {
    y2[row * (p.width - p.split1) + col - p.split1] = v;
  }
#else
#if ROPE_KV
  let pairs = p.width / 2u;
  if (i >= p.rows * pairs) { return; }
  let row = i / pairs;
  let u = i % pairs;
  let half = p.headDim / 2u;
  let qPairs = p.split0 / 2u;
  let kvDim = p.split1 - p.split0;
  let kPairs = kvDim / 2u;
  let at = row * p.width;
  if (u >= qPairs + kPairs) {
    let c = 2u * (u - qPairs - kPairs);
    let dst = position(row) * kvDim + c;
    cacheV[dst] = total(at + p.split1 + c);
    cacheV[dst + 1u] = total(at + p.split1 + c + 1u);
    return;
  }
  let inK = u >= qPairs;
  let w = select(u, u - qPairs, inK);
  let j = w % half;
  let c = (w / half) * p.headDim + j;
  let src = at + select(0u, p.split0, inK) + c;
  let r = rope_pair(total(src), total(src + half), rope_cos_sin(f32(position(row)), invFreq[j]));
  if (inK) {
    let dst = position(row) * kvDim + c;
    cacheK[dst] = r.x;
    cacheK[dst + half] = r.y;
  } else {
    q[row * p.split0 + c] = r.x;
    q[row * p.split0 + c + half] = r.y;
  }
#else
  let half = p.width / 2u;
  if (i >= p.rows * half) { return; }
  let at = (i / half) * p.width + i % half;
  let g = total(at);
  y[i] = g / (1.0 + exp(-g)) * total(at + half);
#endif
#endif
}
