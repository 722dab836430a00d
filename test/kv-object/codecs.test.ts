import { expect } from 'chai';
import { codecFromString, codecToString, decodeKVObject, encodeKVObject, readKVObject } from '../../storage/kv-object/index.ts';
import type { CodecSpec, KVTensors } from '../../storage/kv-object/types.ts';
import { isKdnError } from '../../common/errors.ts';
import { asAsync, chunked, kvTensors, tokenIds, type Shape } from '../../fixtures/kv-data.ts';

const CODECS = ['fp16', 'int8', 'int4', 'fp16+lz4', 'int8+lz4', 'int4+lz4'];

/**
 * Derived per-element error bounds.
 * fp16: round to nearest half: |err| <= 2^-11 |x| (normal halves, |x| >= 2^-14), <= 2^-25 (subnormal range).
 * int8/int4 (L = 255 / 15 levels), group range [lo, hi]: the stored min is lo rounded down to a half
 * (lo - min <= max(2^-10 |lo|, 2^-24)) and the stored scale is (hi - min) / L rounded up to a half
 * (<= that * (1 + 2^-10) + 2^-24); every x lies in [min, min + L * scale], so rounding to the nearest code errs
 * by <= scale / 2, plus the float32 rounding of min + code * scale (<= 2^-24 (|x| + scale)).
 */
function fp16Bound(x: number): number {
  return Math.abs(x) >= 2 ** -14 ? 2 ** -11 * Math.abs(x) : 2 ** -25;
}

function quantBound(x: number, lo: number, hi: number, levels: number): number {
  const scale = ((hi - lo + Math.max(2 ** -10 * Math.abs(lo), 2 ** -24)) / levels) * (1 + 2 ** -10) + 2 ** -24;
  return scale / 2 + 2 ** -24 * (Math.abs(x) + scale);
}

/** Per-element bounds for one tensor, grouping as the codec does (keys per channel over tokens, values per token over channels). */
function bounds(data: Float32Array, shape: Shape, spec: CodecSpec, kind: 'keys' | 'values'): Float64Array {
  const out = new Float64Array(data.length);
  if (spec.name === 'fp16') {
    for (let i = 0; i < data.length; i++) out[i] = fp16Bound(data[i]!);
    return out;
  }
  const levels = spec.name === 'int8' ? 255 : 15;
  const g = spec.groupSize!;
  const channels = shape.kvHeads * shape.headDim;
  const groupOf = (i: number): number => {
    const t = Math.floor(i / channels);
    const c = i % channels;
    return kind === 'keys' ? Math.floor(t / g) * channels + c : t * Math.ceil(channels / g) + Math.floor(c / g);
  };
  const lo = new Map<number, number>();
  const hi = new Map<number, number>();
  for (let i = 0; i < data.length; i++) {
    const k = groupOf(i);
    lo.set(k, Math.min(lo.get(k) ?? Infinity, data[i]!));
    hi.set(k, Math.max(hi.get(k) ?? -Infinity, data[i]!));
  }
  for (let i = 0; i < data.length; i++) {
    const k = groupOf(i);
    out[i] = quantBound(data[i]!, lo.get(k)!, hi.get(k)!, levels);
  }
  return out;
}

interface Row {
  codec: string;
  bytes: number;
  ratioVsFp16: string;
  maxErr: string;
  rmsErr: string;
}

function checkRoundTrip(tensors: KVTensors, spec: CodecSpec): { bytes: number; maxErr: number; rmsErr: number } {
  const bytes = encodeKVObject(tensors, { modelFingerprint: 'test-model', tokenIds: tokenIds(tensors.tokens), codec: spec });
  const { header, tensors: out } = decodeKVObject(bytes);
  expect(header.codec).to.deep.equal(spec);
  expect(out.perLayer).to.have.length(tensors.layers);
  let maxErr = 0;
  let sumSq = 0;
  let count = 0;
  tensors.perLayer.forEach((layer, l) => {
    for (const kind of ['keys', 'values'] as const) {
      const want = layer[kind];
      const got = out.perLayer[l]![kind];
      expect(got.length).to.equal(want.length);
      const b = bounds(want, tensors, spec, kind);
      for (let i = 0; i < want.length; i++) {
        const err = Math.abs(got[i]! - want[i]!);
        if (!(err <= b[i]!))
          expect.fail(`${codecToString(spec)} layer ${l} ${kind}[${i}]: |${got[i]} - ${want[i]}| = ${err} > bound ${b[i]}`);
        maxErr = Math.max(maxErr, err);
        sumSq += err * err;
        count++;
      }
    }
  });
  return { bytes: bytes.length, maxErr, rmsErr: Math.sqrt(sumSq / count) };
}

describe('kv-object codecs: round trip on KV-shaped data within derived bounds', () => {
  const realistic: Shape = { layers: 4, kvHeads: 4, headDim: 64, tokens: 100 };
  const rows: Row[] = [];

  for (const name of CODECS) {
    it(`${name}: every element within its bound`, () => {
      const r = checkRoundTrip(kvTensors(realistic, 11), codecFromString(name));
      rows.push({ codec: name, bytes: r.bytes, ratioVsFp16: '', maxErr: r.maxErr.toExponential(3), rmsErr: r.rmsErr.toExponential(3) });
    });
  }

  after(() => {
    const fp16 = rows.find((r) => r.codec === 'fp16');
    if (!fp16) return;
    for (const r of rows) r.ratioVsFp16 = (r.bytes / fp16.bytes).toFixed(3);
    console.log(
      `\n    KV-shaped data ${realistic.layers}x${realistic.kvHeads}x${realistic.headDim}x${realistic.tokens} (keys with 10x outlier channels, gaussian values), groupSize 32:`,
    );
    console.table(rows);
  });

  it('handles awkward shapes: odd element counts, tokens and channels not multiples of the group, tiny groups', () => {
    const shapes: Shape[] = [
      { layers: 1, kvHeads: 1, headDim: 3, tokens: 5 },
      { layers: 2, kvHeads: 3, headDim: 7, tokens: 33 },
      { layers: 1, kvHeads: 2, headDim: 16, tokens: 1 },
    ];
    for (const shape of shapes) {
      for (const name of CODECS) {
        for (const groupSize of [1, 5, 32, 4096]) {
          const spec = codecFromString(name, groupSize);
          checkRoundTrip(kvTensors(shape, groupSize), spec);
        }
      }
    }
  });

  it('stores constant groups exactly and keeps extreme halves in range', () => {
    const shape: Shape = { layers: 1, kvHeads: 1, headDim: 4, tokens: 8 };
    const t = kvTensors(shape);
    t.perLayer[0]!.keys.fill(0.5);
    t.perLayer[0]!.values.set([65504, -65504, 0, 1e-8, 3, 3, 3, 3]);
    for (const name of CODECS) checkRoundTrip(t, codecFromString(name));
  });

  it('streams the same tensors as a whole-object decode', async () => {
    const t = kvTensors({ layers: 3, kvHeads: 2, headDim: 8, tokens: 40 }, 5);
    for (const name of CODECS) {
      const bytes = encodeKVObject(t, { modelFingerprint: 'm', tokenIds: tokenIds(40), codec: codecFromString(name) });
      const whole = decodeKVObject(bytes).tensors;
      const reader = await readKVObject(asAsync(chunked(bytes, () => 1)));
      let l = 0;
      for await (const block of reader.layers) {
        expect(block.layer).to.equal(l);
        const d = block.decode();
        expect(Array.from(d.keys)).to.deep.equal(Array.from(whole.perLayer[l]!.keys));
        expect(Array.from(d.values)).to.deep.equal(Array.from(whole.perLayer[l]!.values));
        l++;
      }
      expect(l).to.equal(3);
    }
  });

  it('refuses to encode what it could not store: NaN, beyond fp16 range, wrong sizes, bad codec names', () => {
    const shape: Shape = { layers: 1, kvHeads: 1, headDim: 4, tokens: 2 };
    const meta = { modelFingerprint: 'm', tokenIds: [1, 2], codec: codecFromString('int8') };
    const cases: Array<() => unknown> = [
      () => {
        const t = kvTensors(shape);
        t.perLayer[0]!.keys[3] = NaN;
        return encodeKVObject(t, meta);
      },
      () => {
        const t = kvTensors(shape);
        t.perLayer[0]!.values[0] = 1e6;
        return encodeKVObject(t, meta);
      },
      () => {
        const t = kvTensors(shape);
        t.perLayer[0]!.values = new Float32Array(3);
        return encodeKVObject(t, meta);
      },
      () => encodeKVObject(kvTensors(shape), { ...meta, tokenIds: [1] }),
      () => encodeKVObject(kvTensors(shape), { ...meta, tokenIds: [1, -2] }),
      () => encodeKVObject({ ...kvTensors(shape), layers: 2 }, meta),
      () => encodeKVObject(kvTensors(shape), { ...meta, modelFingerprint: '' }),
      () => codecFromString('int3'),
      () => codecFromString('fp16+zstd'),
    ];
    for (const [i, fn] of cases.entries()) {
      let caught: unknown;
      try {
        fn();
      } catch (err) {
        caught = err;
      }
      expect(isKdnError(caught, 'INVALID_ARGUMENT'), `case ${i}: ${String(caught)}`).to.equal(true);
    }
  });

  it('parses codec names', () => {
    expect(codecFromString('int8+lz4')).to.deep.equal({ name: 'int8', lz4: true, groupSize: 32 });
    expect(codecFromString('fp16')).to.deep.equal({ name: 'fp16', lz4: false });
    expect(codecFromString('INT4', 64)).to.deep.equal({ name: 'int4', lz4: false, groupSize: 64 });
  });
});
