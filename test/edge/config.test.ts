import { expect } from 'chai';
import { parseSize } from '../../common/byte-size.ts';
import { resolveEdgeConfig } from '../../edge/server/config.ts';

describe('edge config', () => {
  it('parses byte sizes', () => {
    expect(parseSize('512MiB')).to.equal(512 * 2 ** 20);
    expect(parseSize('4GiB')).to.equal(4 * 2 ** 30);
    expect(parseSize('1.5GB')).to.equal(1_500_000_000);
    expect(parseSize('64kib')).to.equal(65_536);
    expect(parseSize('1048576')).to.equal(1_048_576);
    expect(parseSize(0)).to.equal(0);
    for (const bad of ['', 'MiB', '12 parsecs', '-1GiB', '1e3']) {
      expect(() => parseSize(bad), bad)
        .to.throw()
        .with.property('code', 'INVALID_ARGUMENT');
    }
  });

  it('takes flags over environment over defaults', () => {
    const env = { KDN_EDGE_ORIGIN: 'file:/env/origin', KDN_EDGE_MEMORY: '64MiB', KDN_EDGE_PORT: '9000' };
    const config = resolveEdgeConfig({ port: 0, diskBytes: '1GiB' }, env);
    expect(config).to.include({ port: 0, originUrl: 'file:/env/origin', memoryBytes: 64 * 2 ** 20, diskBytes: 2 ** 30, host: '127.0.0.1' });
  });

  it('rejects a missing origin and bad values with INVALID_ARGUMENT', () => {
    expect(() => resolveEdgeConfig({}, {}))
      .to.throw(/originUrl/)
      .with.property('code', 'INVALID_ARGUMENT');
    expect(() => resolveEdgeConfig({ originUrl: 'file:/x', port: 70_000 }, {})).to.throw(/port/);
    expect(() => resolveEdgeConfig({ originUrl: 'file:/x', memoryBytes: 'lots' }, {})).to.throw(/memoryBytes/);
  });
});
