// The uniforms of the two attention-mass kernels and the causal window, for a few query rows at consecutive
// positions posBase.. over the keys of the forward's rows at position.. (out has one entry per such row).
struct Params { rows: u32, heads: u32, kvHeads: u32, headDim: u32, posBase: u32, window: u32, scale: f32, position: u32, keys: u32 }
@group(0) @binding(0) var<uniform> p: Params;

// The first key a query at absolute position `pos` sees (window 0: all keys).
fn key_start(pos: u32) -> u32 {
  if (p.window == 0u || pos + 1u <= p.window) { return 0u; }
  return pos + 1u - p.window;
}

// The scaled score of query row t, head h against the key at absolute position j.
fn score(t: u32, h: u32, j: u32) -> f32 {
  let qb = (t * p.heads + h) * p.headDim;
  let kb = (j * p.kvHeads + h / (p.heads / p.kvHeads)) * p.headDim;
  var s = 0.0;
  for (var d = 0u; d < p.headDim; d++) { s += q[qb + d] * kc[kb + d]; }
  return s * p.scale;
}
