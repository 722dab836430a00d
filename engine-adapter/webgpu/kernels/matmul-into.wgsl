// Writes v, the finished product of y[i], as MatmulArgs.into asks (matmul.ts): by default it replaces y[i]; INTO_ADD
// adds it (a residual connection); INTO_SWIGLU makes y[i] silu(y[i]) * v (y holding the gate projection, v the up
// projection). Either spares the forward an elementwise pass over y and a buffer for the product. A compile-time
// choice: a branch on a uniform here made the 128 x 128 tensor-core kernel's prefill matmuls 19% slower on an H100.
// The includer declares y. A split-K part is not finished: kernels write parts as they are, and
// matmul-split-reduce.wgsl stores their sum.
fn store(i: u32, v: f32) {
#if INTO_ADD
  y[i] += v;
#else
#if INTO_SWIGLU
  let g = y[i];
  y[i] = g / (1.0 + exp(-g)) * v;
#else
  y[i] = v;
#endif
#endif
}
