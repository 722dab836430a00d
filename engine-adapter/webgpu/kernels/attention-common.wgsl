// The uniforms of both attention kernels (filled by attention-params.ts, then the split count) and the causal window.
struct Params { tokens: u32, heads: u32, kvHeads: u32, headDim: u32, posBase: u32, window: u32, scale: f32, splits: u32 }
@group(0) @binding(0) var<uniform> p: Params;

#if SLOTS
// Query rows gathered from anywhere in the sequence (a blended forward's recomputed tokens): row t sits at the
// position slots[t], ascending. The binding follows the kernel's last buffer.
#if SPLIT
@group(0) @binding(6) var<storage, read> slots: array<u32>;
#else
@group(0) @binding(5) var<storage, read> slots: array<u32>;
#endif
fn row_pos(t: u32) -> u32 { return slots[min(t, p.tokens - 1u)]; }
#else
fn row_pos(t: u32) -> u32 { return p.posBase + t; }
#endif

// The first key a query at absolute position `pos` sees (window 0: all keys).
fn key_start(pos: u32) -> u32 {
  if (p.window == 0u || pos + 1u <= p.window) { return 0u; }
  return pos + 1u - p.window;
}
