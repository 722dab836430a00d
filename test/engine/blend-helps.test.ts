/**
 * Blending must keep paying for itself: on the trained demo model, with chunks of 2-4 held-out documents composed
 * as a retrieval query composes them, recomputing 15% of the context's tokens agrees with a full prefill of the same
 * text more often than injecting the independently computed chunks as they are, and recomputing all of them agrees
 * exactly. Runs the fidelity benchmark's real path (encoded objects, readers, Session.blendKVAndPrefill).
 */
import { existsSync } from 'node:fs';
import { expect } from 'chai';
import { run as runFidelity } from '../../bench/fidelity.ts';
import type { BenchRecord } from '../../bench/report.ts';

describe('blend on the demo model', function () {
  this.timeout(600_000);
  it('recomputing 15% beats independent injection in top-1 agreement and KL; 100% agrees exactly', async () => {
    if (!existsSync('models/kdn-demo/model.safetensors')) throw new Error('the demo model is missing from models/kdn-demo');
    const report = await runFidelity([
      '--backend',
      'cpu',
      '--sets',
      'composed',
      '--modes',
      'independent,blend',
      '--codecs',
      'fp16',
      '--selections',
      'attended',
      '--ratios',
      '0.15,1',
      '--docs',
      '3',
      '--prompts',
      '1',
      '--answer',
      '12',
      '--max-doc-tokens',
      '384',
    ]);
    const find = (mode: string, ratio?: number): BenchRecord =>
      report.records.find((r) => r.mode === mode && (ratio === undefined || r.ratio === ratio))!;
    const independent = find('independent');
    const blend = find('blend', 0.15);
    const whole = find('blend', 1);
    console.log(
      `      top-1 / KL: independent ${independent.top1_agreement} / ${independent.mean_kl}, blend 15% ${blend.top1_agreement} / ${blend.mean_kl}, blend 100% ${whole.top1_agreement} / ${whole.mean_kl}`,
    );
    expect(blend.top1_agreement as number).to.be.greaterThan(independent.top1_agreement as number);
    expect(blend.mean_kl as number).to.be.lessThan(independent.mean_kl as number);
    expect(blend.recomputed_fraction).to.be.within(0.14, 0.16);
    expect(whole.top1_agreement).to.equal(1);
    expect(whole.mean_kl as number).to.be.below(1e-6);
  });
});
