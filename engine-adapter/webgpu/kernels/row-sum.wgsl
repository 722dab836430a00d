// The sum of every invocation's `v` over a workgroup of 256 (a tree in workgroup memory): a row's sum of squares for
// the kernels that norm one row per workgroup (rmsnorm.wgsl, matmul-add-norm.wgsl). It has barriers, so every
// invocation of the workgroup calls it.
var<workgroup> partial: array<f32, 256>;

fn rowSum(lid: u32, v: f32) -> f32 {
  partial[lid] = v;
  workgroupBarrier();
  for (var stride = 128u; stride > 0u; stride >>= 1u) {
    if (lid < stride) { partial[lid] += partial[lid + stride]; }
    workgroupBarrier();
  }
  return partial[0];
}
