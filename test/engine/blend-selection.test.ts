import { expect } from 'chai';
import { KdnError } from '../../common/errors.ts';
import type { BlendSignals } from '../../engine-adapter/backend.ts';
import { BLEND_SELECTIONS, blendBudget, blendPlan, checkLayerFor, gradualShares } from '../../engine-adapter/blend-selection.ts';

/** Three chunks of 10, 10 and 5 context rows, then a 3-row prompt (rows 25..27). */
const LAYOUT = { chunkStarts: [0, 10, 20], contextRows: 25, promptRows: 3 };
const PROMPT_ROWS = [25, 26, 27];
const ALL = Uint32Array.from({ length: 28 }, (_, r) => r);

/** Deviation rising with the row, except rows 3 and 14, which stand out; no attention measured. */
function signals(mass: Float32Array | null = null): BlendSignals {
  const deviation = Float32Array.from({ length: 28 }, (_, r) => r / 100);
  deviation[3] = 10;
  deviation[14] = 9;
  return { deviation, mass };
}

describe('blend selection', () => {
  it('the budget is the rounded share of the context; a ratio outside [0, 1] is INVALID_ARGUMENT with a hint', () => {
    expect(blendBudget(0.15, 25)).to.equal(4);
    expect(blendBudget(0, 25)).to.equal(0);
    expect(blendBudget(1, 25)).to.equal(25);
    for (const bad of [-0.01, 1.01, Number.NaN]) {
      expect(() => blendBudget(bad, 25))
        .to.throw(KdnError)
        .with.property('hint')
        .that.matches(/fraction of context tokens/);
    }
  });

  it('the check layer is layer 1, or layer 0 of a one-layer model', () => {
    expect(checkLayerFor(32)).to.equal(1);
    expect(checkLayerFor(1)).to.equal(0);
  });

  it('deviation: the largest deviations of the context, ascending, then every prompt row', () => {
    const plan = blendPlan('deviation', 0.2, LAYOUT, 6);
    expect(plan.checkLayer).to.equal(1);
    // 5 rows: 3 and 14 stand out, then the largest of the rising rest (24, 23, 22); prompt rows never compete.
    expect([...plan.select(signals(), 1, ALL)]).to.deep.equal([3, 14, 22, 23, 24, ...PROMPT_ROWS]);
    expect([...blendPlan('deviation', 0, LAYOUT, 6).select(signals(), 1, ALL)]).to.deep.equal(PROMPT_ROWS);
    expect(() => plan.select(null, 1, ALL)).to.throw(KdnError);
  });

  it("attended: deviation weighted by the square root of the prompt's attention, measured over at most 64 prompt rows", () => {
    const plan = blendPlan('attended', 0.12, LAYOUT, 6);
    expect(plan.checkLayer).to.equal(1);
    expect(plan.massRows).to.equal(3);
    expect(blendPlan('attended', 0.12, { ...LAYOUT, promptRows: 100 }, 6).massRows).to.equal(64);
    expect(blendPlan('deviation', 0.12, LAYOUT, 6).massRows).to.equal(0);
    // Row 3 stands out but the prompt never reads it; row 24 moved little but is read a thousand times more.
    const mass = new Float32Array(28).fill(0.01);
    mass[3] = 0;
    mass[24] = 10;
    expect([...plan.select(signals(mass), 1, ALL)]).to.deep.equal([14, 23, 24, ...PROMPT_ROWS]);
    expect(() => plan.select(signals(null), 1, ALL)).to.throw(KdnError);
  });

  it("chunk-start: no check layer, the budget spread over the chunks from each chunk's first token", () => {
    const plan = blendPlan('chunk-start', 0.28, LAYOUT, 6);
    expect(plan.checkLayer).to.equal(null);
    // 7 rows over 3 chunks: 3, 2, 2.
    expect([...plan.select(null, 0, ALL)]).to.deep.equal([0, 1, 2, 10, 11, 20, 21, ...PROMPT_ROWS]);
  });

  it('combined: half the budget to chunk starts, the rest by deviation among the others', () => {
    const plan = blendPlan('combined', 0.24, LAYOUT, 6);
    expect(plan.checkLayer).to.equal(1);
    // 6 rows: 3 chunk starts (0, 10, 20), then 3 (row 3 and 14 stand out, then 24).
    expect([...plan.select(signals(), 1, ALL)]).to.deep.equal([0, 3, 10, 14, 20, 24, ...PROMPT_ROWS]);
  });

  it('gradual: shares falling linearly over the layers from the check layer, averaging the ratio; 1 stays 1', () => {
    const shares = gradualShares(0.15, 5);
    [0.24, 0.195, 0.15, 0.105, 0.06].forEach((want, i) => expect(shares[i]).to.be.closeTo(want, 1e-12));
    // Above 1 / 1.6 the tilt shrinks so that the first layer's share is at most 1; the mean stays the ratio.
    const high = gradualShares(0.8, 5);
    expect(high[0]).to.be.closeTo(1, 1e-12);
    expect(high.reduce((a, b) => a + b, 0) / 5).to.be.closeTo(0.8, 1e-12);
    expect(gradualShares(1, 5)).to.deep.equal([1, 1, 1, 1, 1]);
    expect(gradualShares(0.3, 1)).to.deep.equal([0.3]);
  });

  it('gradual: attended scores at every layer, each keeping the best of the rows still running', () => {
    const plan = blendPlan('gradual', 0.15, LAYOUT, 6);
    expect(plan.checkLayer).to.equal(1);
    expect(plan.narrows).to.equal(true);
    expect(plan.massRows).to.equal(3);
    expect(blendPlan('attended', 0.15, LAYOUT, 6).narrows).to.equal(false);
    const mass = new Float32Array(28).fill(0.01);
    // Layer 1 keeps 6 rows (0.24 * 25): 3 and 14 stand out, then the rising rest.
    const first = plan.select(signals(mass), 1, ALL);
    expect([...first]).to.deep.equal([3, 14, 21, 22, 23, 24, ...PROMPT_ROWS]);
    // Layer 4 keeps 3 (0.105 * 25, rounded) of those, by its own signals: row 21 now stands out, row 0 does not run.
    const later = signals(mass);
    later.deviation[21] = 50;
    later.deviation[0] = 100;
    expect([...plan.select(later, 4, first)]).to.deep.equal([3, 14, 21, ...PROMPT_ROWS]);
    // Layer 5 keeps 2 (0.06 * 25, rounded).
    expect([...plan.select(later, 5, first)]).to.deep.equal([3, 21, ...PROMPT_ROWS]);
  });

  it('every selection at ratio 1 recomputes every row', () => {
    for (const selection of BLEND_SELECTIONS) {
      const rows = blendPlan(selection, 1, LAYOUT, 6).select(signals(new Float32Array(28).fill(0.1)), 1, ALL);
      expect([...rows], selection).to.deep.equal(Array.from({ length: 28 }, (_, r) => r));
    }
  });
});
