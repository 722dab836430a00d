import { expect } from 'chai';
import { OracleMixer } from '../../bench/lib/oracle-mix.ts';
import type { KVTensors } from '../../storage/kv-object/types.ts';

/** One layer-count x 1 head x 2 dims chunk whose rows are `rows[layer][token]` for keys and values alike. */
function chunk(rows: number[][]): KVTensors {
  const perLayer = rows.map((layer) => {
    const flat = Float32Array.from(layer.flatMap((v) => [v, 1]));
    return { keys: flat, values: flat.slice() };
  });
  return { layers: rows.length, kvHeads: 1, headDim: 2, tokens: rows[0]!.length, positionBase: 1, ropeApplied: false, perLayer };
}

describe('oracle mixing (the fidelity benchmark ceiling for blend)', () => {
  // Two chunks of two tokens, two layers. Exact rows are all 0 in the first dim; the independent ones deviate by
  // the value written, so layer 0 ranks token 3 first and layer 1 ranks token 0 first.
  const independent = [
    chunk([
      [1, 2],
      [9, 0],
    ]),
    chunk([
      [3, 8],
      [1, 2],
    ]),
  ];
  const exact = [
    chunk([
      [0, 0],
      [0, 0],
    ]),
    chunk([
      [0, 0],
      [0, 0],
    ]),
  ];
  const firstDims = (c: KVTensors, layer: number) => Array.from(c.perLayer[layer]!.keys.filter((_, i) => i % 2 === 0));

  it('per layer: each layer takes exact rows for its own most deviating tokens', () => {
    const { chunks, replaced } = new OracleMixer(independent, exact).mix(0.25, 'per-layer');
    expect(replaced).to.equal(1);
    expect(firstDims(chunks[1]!, 0)).to.deep.equal([3, 0]);
    expect(firstDims(chunks[0]!, 1)).to.deep.equal([0, 0]);
    expect(firstDims(chunks[0]!, 0)).to.deep.equal([1, 2]);
  });

  it('per token: one set for every layer, ranked by the deviation summed over layers', () => {
    const { chunks } = new OracleMixer(independent, exact).mix(0.25, 'per-token');
    // Sums by token: 1+9=10, 2+0=2, 3+1=4, 8+2=10 after normalization per layer; ties aside, token 0 or 3 wins.
    const replacedTokens = [0, 1, 2, 3].filter((t) => {
      const c = chunks[t >> 1]!;
      return firstDims(c, 0)[t & 1] === 0 && firstDims(c, 1)[t & 1] === 0;
    });
    expect(replacedTokens).to.have.length(1);
    expect([0, 3]).to.include(replacedTokens[0]);
  });

  it('leaves the inputs as they were, and refuses chunks that do not pair up', () => {
    new OracleMixer(independent, exact).mix(1, 'per-layer');
    expect(firstDims(independent[0]!, 1)).to.deep.equal([9, 0]);
    expect(() => new OracleMixer(independent, exact.slice(1))).to.throw(/same chunks/);
    expect(() => new OracleMixer(independent, [exact[0]!, { ...exact[1]!, ropeApplied: true }])).to.throw(/before RoPE/);
  });
});
