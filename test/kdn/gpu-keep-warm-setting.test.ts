/** kdn's setting for engine-adapter/webgpu/gpu-keep-warm.ts: off unless asked for, and checked. */
import { expect } from 'chai';
import { resolveKdnConfig } from '../../kdn/config.ts';

describe('kdn serve --gpu-keep-warm', () => {
  it('is off by default, read from KDN_GPU_KEEP_WARM_MS, and refuses what is not a whole number of ms up to a minute', () => {
    expect(resolveKdnConfig({}, {}).gpuKeepWarmMs).to.equal(0);
    expect(resolveKdnConfig({}, { KDN_GPU_KEEP_WARM_MS: '250' }).gpuKeepWarmMs).to.equal(250);
    for (const bad of ['soon', '-1', '2.5', '60001']) {
      expect(() => resolveKdnConfig({}, { KDN_GPU_KEEP_WARM_MS: bad }), bad).to.throw(/gpuKeepWarmMs|KDN_GPU_KEEP_WARM_MS/);
    }
  });
});
