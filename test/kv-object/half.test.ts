import { expect } from 'chai';
import { fromHalfBits, toHalfBits, toHalfBitsDown, toHalfBitsUp } from '../../storage/kv-object/half.ts';
import { rng } from '../../fixtures/kv-data.ts';

describe('kv-object/half (float32 <-> float16)', () => {
  it('round-trips every finite half and keeps infinities and NaN', () => {
    for (let h = 0; h < 0x10000; h++) {
      const exp = (h >>> 10) & 0x1f;
      const v = fromHalfBits(h);
      if (exp === 0x1f) {
        expect(Number.isNaN(v) || Math.abs(v) === Infinity).to.equal(true);
        expect(toHalfBits(v) & 0x7c00).to.equal(0x7c00);
        if (Number.isNaN(v)) expect(toHalfBits(v) & 0x3ff).to.not.equal(0);
        continue;
      }
      expect(toHalfBits(v), `h=0x${h.toString(16)}`).to.equal(h);
    }
  });

  it('decodes known values', () => {
    expect(fromHalfBits(0x3c00)).to.equal(1);
    expect(fromHalfBits(0xc000)).to.equal(-2);
    expect(fromHalfBits(0x7bff)).to.equal(65504);
    expect(fromHalfBits(0x0001)).to.equal(2 ** -24);
    expect(fromHalfBits(0x0400)).to.equal(2 ** -14);
  });

  it('rounds halfway cases to even, in normals and subnormals', () => {
    // Midpoint between consecutive halves h and h+1 goes to whichever has an even mantissa.
    for (const h of [0x3c00, 0x3c01, 0x0001, 0x0002, 0x03ff, 0x7bfe, 0x0000, 0x5555]) {
      const mid = (fromHalfBits(h) + fromHalfBits(h + 1)) / 2;
      expect(Math.fround(mid)).to.equal(mid); // exactly representable in float32, so no double rounding
      expect(toHalfBits(mid), `mid of 0x${h.toString(16)}`).to.equal((h & 1) === 0 ? h : h + 1);
    }
    expect(toHalfBits(2 ** -25)).to.equal(0); // halfway to the smallest subnormal: ties to 0
    expect(toHalfBits(2 ** -25 * 1.0001)).to.equal(1);
    expect(toHalfBits(65520)).to.equal(0x7c00); // halfway past the max half rounds to infinity
    expect(toHalfBits(65519)).to.equal(0x7bff);
    expect(toHalfBits(-1e6)).to.equal(0xfc00);
  });

  it('is the nearest half for random float32 (|err| <= 2^-11 |x| for normals, 2^-25 for subnormals)', () => {
    const random = rng(3);
    for (let i = 0; i < 50000; i++) {
      const x = Math.fround((random() - 0.5) * 2 ** Math.floor(random() * 40 - 26));
      const y = fromHalfBits(toHalfBits(x));
      const bound = Math.abs(x) >= 2 ** -14 ? 2 ** -11 * Math.abs(x) : 2 ** -25;
      expect(Math.abs(x - y), `x=${x}`).to.be.at.most(bound);
    }
  });

  it('rounds down and up when asked (for quantization min and scale)', () => {
    const random = rng(4);
    for (let i = 0; i < 20000; i++) {
      const x = (random() - 0.5) * 200;
      const down = fromHalfBits(toHalfBitsDown(x));
      const up = fromHalfBits(toHalfBitsUp(x));
      expect(down).to.be.at.most(x);
      expect(up).to.be.at.least(x);
      expect(up - down).to.be.at.most(Math.max(2 ** -10 * Math.abs(x), 2 ** -24));
    }
    expect(fromHalfBits(toHalfBitsUp(1e-9))).to.equal(2 ** -24);
    expect(fromHalfBits(toHalfBitsDown(-1e-9))).to.equal(-(2 ** -24));
  });
});
