import { expect } from 'chai';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { run as runDecodeBatch } from '../../bench/decode-batch.ts';
import { run as runDelivery } from '../../bench/delivery.ts';
import { run as runEngine } from '../../bench/engine.ts';
import { run as runEntropyStudy } from '../../bench/entropy-study.ts';
import { run as runFidelity } from '../../bench/fidelity.ts';
import type { TimelineEntry } from '../../bench/lib/timeline-file.ts';
import type { BenchRecord } from '../../bench/report.ts';
import { run as runTtft } from '../../bench/ttft.ts';
import { makeTinyModel } from '../../tools/make-tiny-models.ts';
import { rejection } from '../support/rejection.ts';
import { TRANSFORM_LEVELS } from '../../storage/kv-object/index.ts';

const CODECS = ['fp16', 'fp16+lz4', 'int8', 'int8+lz4', 'int4', 'int4+lz4', ...TRANSFORM_LEVELS.map((l) => `transform:${l.name}`)];
const FIDELITY_MODES = ['prefix-chained', 'independent'];
const TTFT_MODES = [
  'inject',
  'inject-int8',
  'inject-int4',
  'inject-hot',
  'blend',
  'blend-int8',
  'blend-int4',
  'recompute',
  'peer',
  'peer-host-hit',
];

function num(r: BenchRecord, key: string): number {
  const v = r[key];
  expect(v, `${key} of ${JSON.stringify(r)}`).to.be.a('number');
  return v as number;
}

/** Every benchmark on a tiny random model, cpu backend, minimal sizes: the records' shape and sanity, never speed. */
describe('benchmarks on a tiny model', () => {
  let root: string;
  let model: string;

  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'kdn-bench-test-'));
    model = (await makeTinyModel(join(root, 'llama'), { architecture: 'LlamaForCausalLM' })).dir;
  });

  after(async () => {
    await rm(root, { recursive: true, force: true });
  });

  it('fidelity: every codec x mode, sane metrics, fp16 prefix-chained agrees exactly, int4 is smaller', async () => {
    const report = await runFidelity([
      '--model',
      model,
      '--chunk',
      '16',
      '--answer',
      '6',
      '--max-doc-tokens',
      '48',
      '--docs',
      '2',
      '--prompts',
      '2',
      '--sets',
      'document',
      '--modes',
      'prefix-chained,independent',
    ]);
    console.table(report.records);
    expect(report.records).to.have.length(CODECS.length * FIDELITY_MODES.length);
    const byKey = new Map(report.records.map((r) => [`${r.codec}|${r.mode}`, r]));
    for (const codec of CODECS) {
      for (const mode of FIDELITY_MODES) {
        const r = byKey.get(`${codec}|${mode}`);
        expect(r, `${codec} ${mode}`).to.not.equal(undefined);
        expect(num(r!, 'top1_agreement')).to.be.within(0, 1);
        expect(num(r!, 'exact_match')).to.be.within(0, 1);
        expect(num(r!, 'mean_kl')).to.be.at.least(0);
        expect(num(r!, 'bytes_per_token')).to.be.greaterThan(0);
        expect(num(r!, 'positions')).to.equal(2 * 2 * 6);
      }
    }
    const fp16 = byKey.get('fp16|prefix-chained')!;
    expect(fp16.top1_agreement).to.equal(1);
    expect(fp16.exact_match).to.equal(1);
    expect(num(byKey.get('int4|prefix-chained')!, 'bytes_per_token')).to.be.lessThan(num(fp16, 'bytes_per_token'));
    expect(num(byKey.get('transform:x8|prefix-chained')!, 'bytes_per_token')).to.be.lessThan(
      num(byKey.get('int4|prefix-chained')!, 'bytes_per_token'),
    );
    expect(report.params?.documents).to.match(/devil-dictionary-ba\.txt \(48 tokens, 2 prompts\)/);
  });

  it('fidelity: blend rows per selection and ratio on both context sets, recomputing the share asked for; all of it agrees exactly', async () => {
    const report = await runFidelity([
      '--model',
      model,
      '--chunk',
      '16',
      '--answer',
      '4',
      '--max-doc-tokens',
      '40',
      '--docs',
      '2',
      '--prompts',
      '1',
      '--modes',
      'blend',
      '--codecs',
      'fp16,int8',
      '--ratios',
      '0.25,1',
      '--alt-codecs',
      'int8',
    ]);
    const blend = report.records;
    // attended (the default) with both codecs, the other four selections with int8 only; two ratios; two sets.
    expect(blend).to.have.length((2 + 4) * 2 * 2);
    for (const r of blend) {
      expect(r.mode).to.equal('blend');
      expect(num(r, 'recomputed_fraction')).to.be.closeTo(num(r, 'ratio'), 0.05);
      if (r.ratio === 1) expect(r.top1_agreement, JSON.stringify(r)).to.equal(1);
    }
    expect(new Set(blend.map((r) => r.set))).to.deep.equal(new Set(['document', 'composed']));
    expect(report.params?.composed).to.match(/\+/);
  });

  it('fidelity: oracle rows per selection and ratio; no exact rows score as independent, all of them agree exactly', async () => {
    const base = ['--model', model, '--chunk', '16', '--answer', '4', '--max-doc-tokens', '40', '--docs', '2', '--prompts', '1'];
    const report = await runFidelity([...base, '--modes', 'independent,oracle', '--codecs', 'fp16', '--ratios', '0,1']);
    const rows = (mode: string, ratio?: number) => report.records.filter((r) => r.mode === mode && r.ratio === ratio);
    for (const set of ['document', 'composed']) {
      const independent = rows('independent').find((r) => r.set === set)!;
      for (const selection of ['per-layer', 'per-token']) {
        const none = rows('oracle', 0).find((r) => r.set === set && r.selection === selection)!;
        const all = rows('oracle', 1).find((r) => r.set === set && r.selection === selection)!;
        expect(none.top1_agreement).to.equal(independent.top1_agreement);
        expect(none.mean_kl).to.equal(independent.mean_kl);
        expect(all.top1_agreement, JSON.stringify(all)).to.equal(1);
        expect(num(all, 'recomputed_fraction')).to.equal(1);
      }
    }
  });

  it('entropy-study: entropy-coded rates below the fixed rate, fits per budget, ECSQ within its budget, fidelity rows', async () => {
    // The study itself checks its fixed-rate codes against the transform codec's, bit for bit, and throws on a difference.
    const report = await runEntropyStudy([
      ...['--model', model, '--chunk', '16', '--answer', '6', '--docs', '2', '--sets', 'document'],
      ...['--fidelity-levels', 'x4,x8', '--ecsq-budgets', 'x8'],
    ]);
    const part = (name: string): BenchRecord[] => report.records.filter((r) => r.part === name);
    const rates = part('rates');
    expect(rates.map((r) => r.level)).to.have.length(10);
    for (const [i, r] of rates.entries()) {
      // A code's cross-entropy under a table fitted elsewhere is never below its own empirical entropy.
      expect(num(r, 'o0_insample'), String(r.level)).to.be.at.most(num(r, 'o0_static') + 1e-6);
      expect(num(r, 'o0_static_rans')).to.be.above(num(r, 'o0_static'));
      if (i > 0) expect(num(r, 'fixed_bytes_per_token')).to.be.below(num(rates[i - 1]!, 'fixed_bytes_per_token'));
    }
    expect(part('fits').map((r) => r.budget)).to.deep.equal(['x4', 'x6', 'x8', 'x12', 'x16']);
    const [ecsq] = part('ecsq');
    expect(num(ecsq!, 'o0_static_rans')).to.be.at.most(num(ecsq!, 'budget_bytes_per_token') + 1e-4);
    expect(num(ecsq!, 'o0_static_rans')).to.be.above(0.8 * num(ecsq!, 'budget_bytes_per_token'));
    const fidelity = new Map(part('fidelity').map((r) => [r.codec, r]));
    expect([...fidelity.keys()]).to.include.members(['transform:x4', 'transform:x8', 'x8-reconstructed', 'ecsq@x8']);
    // x8 through the real objects and x8 reconstructed by the study's own decoder, injected as fp16: the same answers.
    const [real, rebuilt] = [fidelity.get('transform:x8')!, fidelity.get('x8-reconstructed')!];
    expect(num(rebuilt, 'top1_agreement')).to.equal(num(real, 'top1_agreement'));
    expect(num(rebuilt, 'mean_kl')).to.be.closeTo(num(real, 'mean_kl'), 0.01 * num(real, 'mean_kl') + 1e-6);
    for (const r of fidelity.values()) expect(num(r, 'top1_agreement')).to.be.within(0, 1);
  });

  it('ttft: every mode per context size, inject modes with bytes and a time split, peer figures or a reason', async () => {
    const checkpoints: number[] = [];
    const report = await runTtft(
      ['--model', model, '--backend', 'cpu', '--contexts', '32,64', '--question', '8', '--chunk', '16', '--runs', '1', '--warmup', '0'],
      async (partial) => void checkpoints.push(partial.records.length),
    );
    console.table(report.records);
    expect(report.records).to.have.length(2 * TTFT_MODES.length);
    // Each finished context is checkpointed, so a run cut off by a time limit keeps what it measured.
    expect(checkpoints).to.deep.equal([TTFT_MODES.length, 2 * TTFT_MODES.length]);
    for (const context of [32, 64]) {
      const rows = report.records.filter((r) => r.context_tokens === context);
      expect(rows.map((r) => r.mode)).to.deep.equal(TTFT_MODES);
      for (const r of rows) {
        expect(r.question_tokens).to.equal(8);
        expect(r.device).to.be.a('string');
        if (r.mode === 'peer' || r.mode === 'peer-host-hit') {
          if (r.ttft_ms === null) expect(r.note).to.match(/^skipped: /);
          else expect(num(r, 'ttft_ms')).to.be.greaterThan(0);
          continue;
        }
        expect(r.note, `${r.mode} at ${context}`).to.equal(null);
        expect(num(r, 'ttft_ms')).to.be.greaterThan(0);
        // One run was measured: its time is the median.
        expect(r.ttft_runs_ms, String(r.mode)).to.equal(String(r.ttft_ms));
        if (r.mode === 'recompute') continue;
        if (r.mode === 'inject-hot') {
          // Placed from the engine's hot tier: nothing fetched.
          expect(r.inject_path).to.equal('resident');
          expect(r.bytes).to.equal(0);
          for (const key of ['placed_ms', 'question_ms', 'vs_question']) expect(num(r, key)).to.be.greaterThan(0);
          expect(r.first_token_matches_recompute).to.be.a('boolean');
          continue;
        }
        expect(num(r, 'bytes')).to.be.greaterThan(0);
        // kdn's query path: the question overlapped with the context's arrival, or blended with it.
        const blend = String(r.mode).startsWith('blend');
        expect(r.inject_path).to.equal(blend ? 'blended' : 'overlapped');
        if (blend) {
          expect(r.recomputed_tokens).to.equal(Math.round(0.15 * context));
          expect(num(r, 'vs_inject')).to.be.greaterThan(0);
        }
        for (const key of ['fetch_ms', 'placed_ms', 'question_ms', 'vs_recompute']) expect(num(r, key)).to.be.at.least(0);
        expect(num(r, 'block_wait_ms')).to.be.within(0, num(r, 'placed_ms'));
        expect(r.first_token_matches_recompute).to.be.a('boolean');
      }
      const bytes = (mode: string): number => num(rows.find((r) => r.mode === mode)!, 'bytes');
      expect(bytes('inject-int4')).to.be.lessThan(bytes('inject-int8'));
      expect(bytes('inject-int8')).to.be.lessThan(bytes('inject'));
      expect(rows.find((r) => r.mode === 'inject')!.first_token_matches_recompute).to.equal(true);
      // These objects were exported from the full prefill (prefix-chained): blending them recomputes exact KV.
      expect(rows.find((r) => r.mode === 'blend')!.first_token_matches_recompute).to.equal(true);
    }
  });

  it('ttft --inject-path sequential: chunks injected one by one, then the question, with the same first token', async () => {
    const report = await runTtft([
      '--model',
      model,
      '--backend',
      'cpu',
      '--contexts',
      '48',
      '--question',
      '4',
      '--chunk',
      '16',
      '--runs',
      '1',
      '--warmup',
      '0',
      '--modes',
      'recompute,inject-int8',
      '--inject-path',
      'sequential',
      '--window',
      '2',
    ]);
    const r = report.records.find((x) => x.mode === 'inject-int8')!;
    expect(r.inject_path).to.equal('sequential');
    for (const key of ['fetch_ms', 'fetch_wait_ms', 'inject_ms', 'question_ms']) expect(num(r, key)).to.be.at.least(0);
    expect(r.placed_ms).to.equal(null);
    expect(r.first_token_matches_recompute).to.equal(true);
  });

  it('ttft --timeline: the engine timeline of every measured run of the overlapped path, in a file of its own', async () => {
    const file = join(root, 'timeline.json');
    const args = ['--model', model, '--backend', 'cpu', '--contexts', '32', '--question', '4', '--chunk', '16'];
    await runTtft([...args, '--runs', '2', '--warmup', '1', '--modes', 'inject-int8,inject-int4', '--timeline', file]);
    const written = JSON.parse(await readFile(file, 'utf8')) as { command: string; entries: TimelineEntry[] };
    expect(written.command).to.contain('--timeline');
    expect(written.entries.map((e) => [e.context_tokens, e.mode, e.inject_path])).to.deep.equal([
      [32, 'inject-int8', 'overlapped'],
      [32, 'inject-int4', 'overlapped'],
    ]);
    for (const entry of written.entries) {
      expect(entry.runs, 'the measured runs, not the warmup').to.have.length(2);
      for (const run of entry.runs) {
        expect(run.engine_start_ms).to.be.within(0, run.ttft_ms);
        expect(run.timeline.events.filter((e) => e.kind === 'gate').length).to.be.greaterThan(0);
        expect(run.timeline.placedMs).to.be.a('number');
      }
    }
  });

  it('ttft --idle-ms: every measured query after that idle, recorded', async () => {
    const args = ['--model', model, '--backend', 'cpu', '--contexts', '32', '--question', '4', '--chunk', '16', '--modes', 'inject-int4'];
    const idles = async (idle: string): Promise<{ param: unknown; runs: unknown }> => {
      const report = await runTtft([...args, '--runs', '2', '--warmup', '0', '--idle-ms', idle]);
      const row = report.records.find((r) => r.mode === 'inject-int4')!;
      return { param: (report.params as { idleMs?: unknown }).idleMs, runs: row.idle_runs_ms };
    };
    const none = await idles('0');
    const idle = await idles('300');
    expect(none).to.deep.equal({ param: 0, runs: null });
    expect(idle.param).to.equal(300);
    const waited = String(idle.runs).split(' ').map(Number);
    expect(waited, 'one idle per measured query').to.have.length(2);
    // A timer may fire early only by its clock's rounding, under a millisecond.
    for (const ms of waited) expect(ms).to.be.at.least(299);
  });

  it('ttft --sink: prefill computes the sink in every run, resident once (a warmup) and then copies it from the hot tier', async () => {
    const args = ['--model', model, '--backend', 'cpu', '--contexts', '32', '--question', '4', '--chunk', '16'];
    const modes = ['inject-int4', 'inject-hot', 'blend-int4'];
    const rows = async (sink?: string): Promise<BenchRecord[]> => {
      const sinkArgs = sink ? ['--sink', sink] : [];
      const report = await runTtft([...args, '--runs', '2', '--warmup', '1', '--modes', ['recompute', ...modes].join(','), ...sinkArgs]);
      return report.records.filter((r) => modes.includes(String(r.mode)));
    };
    for (const r of await rows()) {
      expect(r).to.include({ sink: 'none', sink_ms: null, sink_computed_runs: null, note: null });
      expect(r.first_token_matches_recompute).to.be.a('boolean');
    }
    for (const [sink, computed] of [
      ['prefill', 2],
      ['resident', 0],
    ] as const) {
      for (const r of await rows(sink)) {
        expect(r, `${r.mode} --sink ${sink}`).to.include({ sink, sink_computed_runs: computed, note: null });
        expect(num(r, 'sink_ms')).to.be.greaterThan(0);
        // Recompute prefills no sink: its first token is not the injected context's to match.
        expect(r.first_token_matches_recompute).to.equal(null);
      }
    }
  });

  it('ttft --kv synthetic: inject modes timed from seeded random objects (no prefill), marked as timing only', async () => {
    const report = await runTtft([
      '--model',
      model,
      '--backend',
      'cpu',
      '--contexts',
      '40',
      '--question',
      '4',
      '--chunk',
      '16',
      '--runs',
      '1',
      '--warmup',
      '0',
      '--modes',
      'inject,inject-int4',
      '--kv',
      'synthetic',
    ]);
    expect(report.records.map((r) => r.mode)).to.deep.equal(['inject', 'inject-int4']);
    for (const r of report.records) {
      expect(r.note).to.match(/^synthetic KV/);
      expect(r.first_token_matches_recompute).to.equal(null);
      expect(num(r, 'ttft_ms')).to.be.greaterThan(0);
    }
    // 40 tokens in chunks of 16 (the last of 8): fp16 objects hold exactly 40 tokens of KV plus three headers.
    const perToken = Number(report.params?.kvBytesPerTokenFp16);
    expect(num(report.records[0]!, 'bytes')).to.be.within(40 * perToken, 40 * perToken + 3 * 4096);
    expect(num(report.records[1]!, 'bytes')).to.be.lessThan(num(report.records[0]!, 'bytes'));
  });

  it('ttft: a context longer than the model holds records an error and the run goes on', async () => {
    const report = await runTtft([
      '--model',
      model,
      '--backend',
      'cpu',
      '--contexts',
      '4096,16',
      '--question',
      '4',
      '--chunk',
      '16',
      '--runs',
      '1',
      '--warmup',
      '0',
      '--modes',
      'inject,recompute',
    ]);
    const failed = report.records.filter((r) => r.context_tokens === 4096);
    expect(failed.map((r) => r.mode)).to.deep.equal(['inject', 'recompute']);
    for (const r of failed) expect(r.note).to.match(/^error: /);
    const ok = report.records.filter((r) => r.context_tokens === 16);
    for (const r of ok) expect(num(r, 'ttft_ms')).to.be.greaterThan(0);
  });

  it('ttft and engine: a spent --max-seconds budget still returns a record per measurement, marked skipped', async () => {
    const ttft = await runTtft([
      '--model',
      model,
      '--backend',
      'cpu',
      '--contexts',
      '16,32',
      '--question',
      '4',
      '--chunk',
      '16',
      '--modes',
      'inject,recompute',
      '--max-seconds',
      '0.001',
    ]);
    expect(ttft.records.map((r) => `${r.context_tokens}/${r.mode}`)).to.deep.equal([
      '16/inject',
      '16/recompute',
      '32/inject',
      '32/recompute',
    ]);
    for (const r of ttft.records) expect(r.note).to.match(/--max-seconds 0.001 budget reached/);
    const engine = await runEngine(['--model', model, '--backend', 'cpu', '--contexts', '16', '--no-peer', '--max-seconds', '0.001']);
    expect(engine.records).to.have.length(1);
    expect(engine.records[0]!.note).to.match(/--max-seconds 0.001 budget reached/);
  });

  it('delivery: the placed stages place every object on a thread of their own and say when layer 0 was', async () => {
    const report = await runDelivery([
      ...['--objects', '4', '--tokens', '16', '--layers', '4', '--kv-heads', '2', '--head-dim', '16', '--codecs', 'int4'],
      ...['--rounds', '1', '--fetch-threads', '2', '--stages', 'shm-interleaved,shm-placed,shm-placed-arrival,shm-placed-alongside,placed'],
      ...['--place-cost-us', '3000'],
    ]);
    expect(report.records.map((r) => r.stage)).to.deep.equal([
      'shm-interleaved',
      'shm-placed',
      'shm-placed-arrival',
      'shm-placed-alongside',
      'placed',
    ]);
    for (const r of report.records) expect(num(r, 'layer0Ms')).to.be.within(0, num(r, 'ms'));
    // The placing thread spends 3 ms more on each of the 16 blocks it places.
    expect(report.params).to.include({ placeCostUs: 3000 });
    for (const r of report.records.slice(1)) expect(num(r, 'ms')).to.be.at.least(16 * 3);
  });

  it("delivery: shm-engine routes the fast path's objects to the WebGPU injection, each layer read from the edge's file", async function () {
    const report = await runDelivery([
      ...['--objects', '4', '--tokens', '16', '--layers', '4', '--kv-heads', '2', '--head-dim', '16', '--codecs', 'int4,fp16'],
      ...['--rounds', '1', '--fetch-threads', '2', '--stages', 'shm-engine'],
    ]).catch((err: Error) => {
      if (process.env.CI !== 'true' && /adapter/i.test(err.message)) this.skip();
      throw err;
    });
    expect(report.records.map((r) => `${r.codec}/${r.stage}`)).to.deep.equal(['int4/shm-engine', 'fp16/shm-engine']);
    for (const r of report.records) {
      expect(num(r, 'GBps')).to.be.greaterThan(0);
      // Every layer of every object read from its file: 4 objects of 4 layers.
      expect(num(r, 'readBlocks')).to.equal(16);
    }
  });

  it('bad arguments are typed errors', async () => {
    expect((await rejection(runTtft(['--shape', 'gpt-5']))).code).to.equal('INVALID_ARGUMENT');
    expect((await rejection(runTtft(['--shape', 'tiny', '--contexts', '0']))).code).to.equal('INVALID_ARGUMENT');
    expect((await rejection(runEngine(['--model', join(root, 'missing')]))).code).to.equal('NOT_FOUND');
    expect((await rejection(runFidelity(['--model', model, '--codecs', 'int3']))).code).to.equal('INVALID_ARGUMENT');
    expect((await rejection(runDelivery(['--place-cost-us', '-5']))).code).to.equal('INVALID_ARGUMENT');
  });

  it('decode-batch: tokens/s alone and together per sequence count, together in steps of all of them', async () => {
    const report = await runDecodeBatch([
      '--shape',
      'tiny',
      '--backend',
      'cpu',
      '--sequences',
      '1,3',
      '--context',
      '24',
      '--decode',
      '5',
      '--rounds',
      '2',
    ]);
    console.table(report.records);
    expect(report.records.map((r) => r.sequences)).to.deep.equal([1, 3]);
    for (const r of report.records) {
      expect(num(r, 'alone_tok_s')).to.be.greaterThan(0);
      expect(num(r, 'together_tok_s')).to.be.greaterThan(0);
      expect(num(r, 'speedup')).to.be.greaterThan(0);
      expect(num(r, 'alone_tok_s_min')).to.be.at.most(num(r, 'alone_tok_s_max'));
      // Sessions decode in lockstep from equal contexts: every step carries all of them.
      expect(r.sequences_per_step).to.equal(r.sequences);
    }
    expect((await rejection(runDecodeBatch(['--shape', 'shipped']))).code).to.equal('INVALID_ARGUMENT');
  });

  it('engine: prefill and decode throughput per context size, engine and peer rows', async () => {
    const report = await runEngine([
      '--model',
      model,
      '--backend',
      'cpu',
      '--contexts',
      '16,48',
      '--decode',
      '4',
      '--runs',
      '1',
      '--warmup',
      '0',
    ]);
    console.table(report.records);
    expect(report.records.map((r) => `${r.context_tokens}/${r.mode}`)).to.deep.equal(['16/engine', '16/peer', '48/engine', '48/peer']);
    for (const r of report.records.filter((x) => x.mode === 'engine')) {
      expect(r.note).to.equal(null);
      expect(num(r, 'prefill_tok_s')).to.be.greaterThan(0);
      expect(num(r, 'decode_tok_s')).to.be.greaterThan(0);
      expect(r.decode_tokens).to.equal(4);
    }
    for (const r of report.records.filter((x) => x.mode === 'peer')) {
      if (r.prefill_tok_s === null) expect(r.note).to.match(/^skipped: /);
    }
  });
});
