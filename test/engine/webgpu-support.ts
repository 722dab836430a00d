/**
 * Shared by the WebGPU tests: opening the adapter (skip with the reason when there is none, except under CI=true,
 * where a missing adapter fails), seeded random data, and float comparison with a stated tolerance.
 */
import { expect } from 'chai';
import type { ModelWeights, Tensor } from '../../engine-adapter/model/weights.ts';
import { openDevice } from '../../engine-adapter/webgpu/device.ts';
import { GpuContext } from '../../engine-adapter/webgpu/gpu-context.ts';

/** What `open` opens on the WebGPU adapter (an engine, a device); skips `test` when it fails, unless CI=true. */
export async function openOrSkip<T>(test: Mocha.Context, open: () => Promise<T>): Promise<T> {
  try {
    return await open();
  } catch (err) {
    if (process.env.CI === 'true') throw err;
    console.log(`      no WebGPU adapter, skipping: ${(err as Error).message}`);
    test.skip();
  }
}

export function openContextOrSkip(test: Mocha.Context): Promise<GpuContext> {
  return openOrSkip(test, async () => new GpuContext(await openDevice()));
}

/** Deterministic uniform values in [-scale, scale). */
export function randomArray(length: number, seed: number, scale = 1): Float32Array {
  let s = seed >>> 0 || 1;
  const out = new Float32Array(length);
  for (let i = 0; i < length; i++) {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    out[i] = (((s >>> 0) / 2 ** 32) * 2 - 1) * scale;
  }
  return out;
}

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** Rounds to the nearest f16 value (ties to even), for references of the f16-weight path. */
export function f16Round(x: number): number {
  f32[0] = x;
  const bits = u32[0]!;
  const exp = (bits >>> 23) & 0xff;
  if (exp === 0xff) return x;
  const e = exp - 127;
  // f16 keeps 10 mantissa bits for normals; subnormals below 2^-14 keep fewer.
  const keep = e < -14 ? 10 - (-14 - e) : 10;
  if (keep < 0) return 0 * Math.sign(x);
  const ulp = 2 ** (e - keep);
  const q = x / ulp;
  const r = Math.round(q);
  const even = Math.abs(q - Math.trunc(q)) === 0.5 ? 2 * Math.round(q / 2) : r;
  return even * ulp;
}

export function f16RoundArray(a: Float32Array): Float32Array {
  return a.map(f16Round);
}

/** The model's weights rounded to f16, as the GPU holds f16 weights: the CPU backend's reference for them. */
export function roundWeightsToF16(w: ModelWeights): ModelWeights {
  const r = (t: Tensor): Tensor => ({ shape: t.shape, data: f16RoundArray(t.data) });
  const embed = r(w.embed);
  return {
    ...w,
    embed,
    lmHead: w.lmHead === w.embed ? embed : r(w.lmHead),
    layers: w.layers.map((l) => ({ ...l, q: r(l.q), k: r(l.k), v: r(l.v), o: r(l.o), gate: r(l.gate), up: r(l.up), down: r(l.down) })),
  };
}

/** Fails on the first element where |actual - expected| > atol + rtol |expected|, naming it. */
export function expectClose(actual: Float32Array, expected: Float32Array, atol: number, rtol = 0, what = 'values'): number {
  expect(actual.length, `${what} length`).to.equal(expected.length);
  let worst = 0;
  for (let i = 0; i < expected.length; i++) {
    const diff = Math.abs(actual[i]! - expected[i]!);
    worst = Math.max(worst, diff);
    if (!(diff <= atol + rtol * Math.abs(expected[i]!))) {
      expect.fail(`${what}[${i}]: got ${actual[i]}, expected ${expected[i]} (tolerance ${atol} + ${rtol} relative)`);
    }
  }
  return worst;
}
