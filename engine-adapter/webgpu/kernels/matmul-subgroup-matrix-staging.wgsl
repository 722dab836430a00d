// What both tensor-core matmuls share: the bindings, the K step and staged row stride, and a thread's loads of one K
// step's operands from storage (the uniforms come from matmul-common.wgsl).
@group(0) @binding(1) var<storage, read> x: array<vec4f>;
@group(0) @binding(2) var<storage, read> w: array<vec4u>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;

const TK = 32u;
// Row stride of the staged tiles: 8 halves of padding spread the 16 rows a matrix load reads over the banks.
const TKP = TK + 8u;

// Element e of a K step's x tile (rows of 8 vec4f from row m0) and W tile (rows of 4 vec4u, 8 halves each, from row
// n0), zero beyond the ragged edges.
fn xPart(m0: u32, k0: u32, e: u32) -> vec4f {
  let r = e / 8u;
  if (m0 + r >= p.m) { return vec4f(0.0); }
  return x[(m0 + r) * (p.k / 4u) + k0 / 4u + e % 8u];
}

fn wPart(n0: u32, k0: u32, e: u32) -> vec4u {
  let r = e / 4u;
  if (n0 + r >= p.n) { return vec4u(0u); }
  return w[(n0 + r) * (p.rowWords / 4u) + k0 / 8u + e % 4u];
}
