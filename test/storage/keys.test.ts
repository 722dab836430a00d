import { expect } from 'chai';
import { validateKey, validatePrefix } from '../../storage/keys.ts';
import { isKdnError } from '../../common/errors.ts';

describe('storage/keys', () => {
  it('accepts plain relative keys', () => {
    for (const key of ['a', 'ns/doc/chunk-0001.kv', 't=1/x_y.z-2']) expect(validateKey(key)).to.equal(key);
  });

  it('rejects traversal, absolute, empty segments and odd characters with INVALID_KEY', () => {
    const bad: unknown[] = ['', '/etc/passwd', '../x', 'a/../b', 'a/./b', 'a//b', 'a/', 'a b', 'a\\b', 'ä', 'x'.repeat(600), 7, null];
    for (const key of bad) {
      let caught: unknown;
      try {
        validateKey(key);
      } catch (err) {
        caught = err;
      }
      expect(isKdnError(caught, 'INVALID_KEY'), `key ${JSON.stringify(key)}`).to.equal(true);
    }
  });

  it('accepts prefixes ending in a slash and the empty prefix', () => {
    expect(validatePrefix('')).to.equal('');
    expect(validatePrefix('ns/doc/')).to.equal('ns/doc/');
    expect(() => validatePrefix('../')).to.throw(/segment/);
  });
});
