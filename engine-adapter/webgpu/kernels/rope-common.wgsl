// RoPE's rotation as transformers computes it: the angle is the float32 product position * invFreq. Vulkan only
// promises sin/cos to 2^-11 (and less for large arguments), so the angle is reduced by pi/2 with a two-part
// constant (Cody-Waite, fused multiply-adds) and sin/cos come from Taylor polynomials accurate to ~1e-7 on
// [-pi/4, pi/4]: the same result on every adapter, at any position up to the millions.
const HALF_PI_HI = 1.5707963705062866;      // f32(pi / 2)
const HALF_PI_LO = -4.371139000186243e-8;   // pi / 2 - f32(pi / 2)

// (cos, sin) of pos * invFreq.
fn rope_cos_sin(pos: f32, invFreq: f32) -> vec2f {
  let a = pos * invFreq;
  let k = round(a * 0.6366197723675814);
  let r = fma(-k, HALF_PI_LO, fma(-k, HALF_PI_HI, a));
  let r2 = r * r;
  let s = r * (1.0 + r2 * (-1.0 / 6.0 + r2 * (1.0 / 120.0 + r2 * (-1.0 / 5040.0 + r2 * (1.0 / 362880.0)))));
  let c = 1.0 + r2 * (-0.5 + r2 * (1.0 / 24.0 + r2 * (-1.0 / 720.0 + r2 * (1.0 / 40320.0 + r2 * (-1.0 / 3628800.0)))));
  switch ((i32(k) % 4 + 4) % 4) {
    case 0: { return vec2f(c, s); }
    case 1: { return vec2f(-s, c); }
    case 2: { return vec2f(-c, -s); }
    default: { return vec2f(s, -c); }
  }
}

// Rotates the pair (x[i], x[i + headDim / 2]) by the angle whose (cos, sin) is `cs` (the rotate_half convention).
fn rope_pair(a: f32, b: f32, cs: vec2f) -> vec2f {
  return vec2f(a * cs.x - b * cs.y, b * cs.x + a * cs.y);
}
