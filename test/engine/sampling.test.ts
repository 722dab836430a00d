import { expect } from 'chai';
import { Sampler } from '../../engine-adapter/sampling.ts';

function counts(sampler: Sampler, logits: Float32Array, draws: number): number[] {
  const c = new Array<number>(logits.length).fill(0);
  for (let i = 0; i < draws; i++) c[sampler.sample(logits)]!++;
  return c;
}

describe('engine sampling', () => {
  const logits = Float32Array.from([Math.log(0.5), Math.log(0.3), Math.log(0.2)]);

  it('greedy (temperature 0 or absent) is the argmax', () => {
    expect(new Sampler().sample(Float32Array.from([1, 3, 2]))).to.equal(1);
    expect(new Sampler({ temperature: 0, topP: 0.5 }).sample(Float32Array.from([1, 3, 2]))).to.equal(1);
  });

  it('temperature 1 samples the softmax distribution', () => {
    const c = counts(new Sampler({ temperature: 1, seed: 1 }), logits, 20000);
    expect(c[0]! / 20000).to.be.closeTo(0.5, 0.02);
    expect(c[1]! / 20000).to.be.closeTo(0.3, 0.02);
    expect(c[2]! / 20000).to.be.closeTo(0.2, 0.02);
  });

  it('top-p keeps the smallest set reaching p and renormalizes it', () => {
    const c = counts(new Sampler({ temperature: 1, topP: 0.7, seed: 2 }), logits, 10000);
    expect(c[2]).to.equal(0);
    expect(c[0]! / 10000).to.be.closeTo(0.5 / 0.8, 0.02);
    const only = counts(new Sampler({ temperature: 5, topP: 0.01, seed: 3 }), logits, 200);
    expect(only).to.deep.equal([200, 0, 0]);
  });

  it('the same seed gives the same draws; a bad top-p is refused', () => {
    const draw = (seed: number): number[] => {
      const s = new Sampler({ temperature: 1, seed });
      return Array.from({ length: 50 }, () => s.sample(logits));
    };
    expect(draw(9)).to.deep.equal(draw(9));
    expect(draw(9)).to.not.deep.equal(draw(10));
    expect(() => new Sampler({ topP: 0 })).to.throw(RangeError);
    expect(() => new Sampler({ topP: 1.5 })).to.throw(RangeError);
  });
});
