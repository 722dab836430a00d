import { expect } from 'chai';
import { chainedKey, chunkPrefix, codecLabel, documentId, independentKey, manifestKey, type KeyScope } from '../../kdn/keys.ts';
import { codecFromString } from '../../storage/kv-object/index.ts';
import { validateKey } from '../../storage/keys.ts';

describe('kdn/keys', () => {
  const scope: KeyScope = { modelFingerprint: 'f'.repeat(64), codec: codecFromString('int8'), salt: '' };
  const ids = [1, 2, 3, 4];

  it('makes valid, deterministic content-addressed keys', () => {
    const key = independentKey(scope, ids);
    expect(validateKey(key)).to.equal(key);
    expect(independentKey({ ...scope }, [...ids])).to.equal(key);
    expect(key).to.match(/^kv\/s[0-9a-f]{16}\/f{16}\/int8-g\d+\/ind\/[0-9a-f]{64}\.kv$/);
    expect(key.startsWith(chunkPrefix(''))).to.equal(true);
    expect(independentKey({ ...scope, salt: 'tenant-a' }, ids).startsWith(chunkPrefix('tenant-a'))).to.equal(true);
    expect(chunkPrefix('tenant-a')).to.not.equal(chunkPrefix(''));
    expect(validateKey(manifestKey('default', documentId('default', 't', 'x')))).to.be.a('string');
  });

  it('changes with the tokens, the model, the codec and the salt', () => {
    const base = independentKey(scope, ids);
    const variants = [
      independentKey(scope, [1, 2, 3, 5]),
      independentKey({ ...scope, modelFingerprint: 'e'.repeat(64) }, ids),
      independentKey({ ...scope, codec: codecFromString('fp16') }, ids),
      independentKey({ ...scope, codec: codecFromString('int8+lz4') }, ids),
      independentKey({ ...scope, salt: 'tenant-a' }, ids),
    ];
    expect(new Set([base, ...variants]).size).to.equal(variants.length + 1);
  });

  it('chains: a chain starts at the independent key and each key depends on the previous one', () => {
    const first = chainedKey(scope, null, ids);
    expect(first).to.equal(independentKey(scope, ids));
    const second = chainedKey(scope, first, [9, 9]);
    expect(second).to.not.equal(independentKey(scope, [9, 9]));
    expect(second).to.not.equal(chainedKey(scope, independentKey(scope, [7]), [9, 9]));
    expect(second).to.contain('/chain/');
    expect(chainedKey(scope, first, [9, 9])).to.equal(second);
  });

  it('labels codecs without characters keys cannot hold', () => {
    expect(codecLabel(codecFromString('fp16'))).to.equal('fp16');
    expect(codecLabel(codecFromString('int4+lz4'))).to.match(/^int4-g\d+-lz4$/);
  });

  it('gives document ids that depend on namespace, title and text', () => {
    const id = documentId('default', 'title', 'text');
    expect(id).to.match(/^[0-9a-f]{32}$/);
    expect(documentId('default', 'title', 'text')).to.equal(id);
    expect(
      new Set([id, documentId('other', 'title', 'text'), documentId('default', 'title2', 'text'), documentId('default', 'title', 'text2')])
        .size,
    ).to.equal(4);
  });
});
