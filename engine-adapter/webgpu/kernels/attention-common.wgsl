// The uniforms of both attention kernels (filled by attention-params.ts, then the split count) and the causal window.
struct Params { tokens: u32, heads: u32, kvHeads: u32, headDim: u32, posBase: u32, window: u32, scale: f32, splits: u32 }
@group(0) @binding(0) var<uniform> p: Params;

// The first key a query at absolute position `pos` sees (window 0: all keys).
fn key_start(pos: u32) -> u32 {
  if (p.window == 0u || pos + 1u <= p.window) { return 0u; }
  return pos + 1u - p.window;
}
