/**
 * Bind group layouts read from a kernel's WGSL: the uniform parameters at binding 0 take a dynamic offset, storage
 * bindings keep their access, and kernels that bind alike get equal keys (and so share bind groups). Every kernel
 * the engine builds goes through this on each backend test; here the rules and their errors.
 */
import { expect } from 'chai';
import { KdnError } from '../../common/errors.ts';
import { bindLayoutEntries, layoutKey } from '../../engine-adapter/webgpu/bind-layout.ts';

const kernel = (bindings: string): string => `struct Params { n: u32 }\n${bindings}\n@compute @workgroup_size(64) fn main() {}`;

describe('webgpu bind layout', () => {
  it('reads every binding of group 0 in binding order, the uniform at 0 with a dynamic offset', () => {
    const entries = bindLayoutEntries(
      kernel(`@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(0) var<uniform> p: Params;
@group(0)  @binding( 1 ) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage> z: array<f32>;`),
      'k',
    );
    expect(entries.map((e) => [e.binding, e.buffer])).to.deep.equal([
      [0, { type: 'uniform', hasDynamicOffset: true }],
      [1, { type: 'read-only-storage' }],
      [2, { type: 'storage' }],
      [3, { type: 'read-only-storage' }],
    ]);
    expect(entries.every((e) => e.visibility === 0x4)).to.equal(true);
  });

  it('gives kernels that bind alike one key, and others another', () => {
    const a = bindLayoutEntries(
      kernel('@group(0) @binding(0) var<uniform> p: Params;\n@group(0) @binding(1) var<storage, read> x: array<f32>;'),
      'a',
    );
    const b = bindLayoutEntries(
      kernel('@group(0) @binding(0) var<uniform> q: Params;\n@group(0) @binding(1) var<storage, read> w: array<u32>;'),
      'b',
    );
    const c = bindLayoutEntries(
      kernel('@group(0) @binding(0) var<uniform> p: Params;\n@group(0) @binding(1) var<storage, read_write> x: array<f32>;'),
      'c',
    );
    expect(layoutKey(a)).to.equal(layoutKey(b));
    expect(layoutKey(a)).to.not.equal(layoutKey(c));
  });

  it('refuses kernels without parameters at binding 0, with a uniform elsewhere, or binding another group', () => {
    const cases = [
      '@group(0) @binding(1) var<storage, read> x: array<f32>;',
      '@group(0) @binding(0) var<uniform> p: Params;\n@group(0) @binding(1) var<uniform> q: Params;',
      '@group(0) @binding(0) var<uniform> p: Params;\n@group(1) @binding(0) var<storage, read> x: array<f32>;',
    ];
    for (const code of cases) expect(() => bindLayoutEntries(kernel(code), 'bad.wgsl'), code).to.throw(KdnError, /bad\.wgsl/);
  });
});
