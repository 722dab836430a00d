/**
 * Decode throughput of continuous batching on a synthetic shape (random weights, bench/lib/shapes.ts): for each
 * --sequences count N, N sessions each hold a --context-token context and generate --decode greedy tokens,
 *   alone:    one session after another, every token its own forward (kdn with KDN_ENGINE_BATCH=1);
 *   together: all N at once through a DecodeBatcher, one batched step per token for all (kdn's default);
 * generated tokens/s of each, alternating the two over --rounds rounds with the order flipping each round (the
 * contexts are prefilled once per session and truncated back after every round). One record per N: medians and
 * ranges, batching's speedup (ratio of medians) and the steps' mean sequences.
 *
 *   npm run bench -- decode-batch --shape llama3.2-1b --sequences 1,8,32 --context 1024 --backend webgpu
 */
import { BackendSession, DecodeBatcher, type Session } from '../engine-adapter/index.ts';
import { choice, intList, parseFlags, positiveInt } from './lib/args.ts';
import { median, round } from './lib/stats.ts';
import { SYNTHETIC_SHAPES } from './lib/shapes.ts';
import { openSyntheticModel, type SyntheticModel } from './lib/synthetic-engine.ts';
import { randomTokenIds } from './lib/token-ids.ts';
import type { BenchRecord, BenchReport } from './report.ts';

interface DecodeBatchArgs {
  shape: string;
  backend: 'cpu' | 'webgpu';
  sequences: number[];
  context: number;
  decode: number;
  rounds: number;
}

function parse(args: string[]): DecodeBatchArgs {
  const v = parseFlags(args, {
    shape: { type: 'string' },
    backend: { type: 'string' },
    sequences: { type: 'string' },
    context: { type: 'string' },
    decode: { type: 'string' },
    rounds: { type: 'string' },
  });
  return {
    shape: choice(v.shape, 'llama3.2-1b', Object.keys(SYNTHETIC_SHAPES), 'shape'),
    backend: choice(v.backend, 'webgpu', ['cpu', 'webgpu'] as const, 'backend'),
    sequences: intList(v.sequences, [1, 8, 32], 'sequences'),
    context: positiveInt(v.context, 1024, 'context'),
    decode: positiveInt(v.decode, 32, 'decode'),
    rounds: positiveInt(v.rounds, 2, 'rounds'),
  };
}

type Setting = 'alone' | 'together';

/** N sessions of one setting, each holding its own prefilled context. */
async function prefilled(m: SyntheticModel, a: DecodeBatchArgs, n: number, batcher?: DecodeBatcher): Promise<Session[]> {
  const sessions: Session[] = [];
  for (let i = 0; i < n; i++) {
    const session = new BackendSession(m.backend, m.model, a.context + a.decode, undefined, batcher);
    await session.prefill(randomTokenIds(a.context, m.info.vocabSize, i + 1), { logits: 'last' });
    sessions.push(session);
  }
  return sessions;
}

/** Generated tokens/s of `sessions` decoding one after another or together; each is truncated back afterwards. */
async function decodeRound(sessions: readonly Session[], setting: Setting, a: DecodeBatchArgs): Promise<number> {
  const generate = (s: Session) => s.generate({ maxTokens: a.decode, ignoreEos: true });
  const t0 = performance.now();
  const results = setting === 'together' ? await Promise.all(sessions.map(generate)) : [];
  if (setting === 'alone') for (const s of sessions) results.push(await generate(s));
  const seconds = (performance.now() - t0) / 1000;
  for (const s of sessions) s.truncate(a.context);
  return results.reduce((sum, r) => sum + r.tokens.length, 0) / seconds;
}

async function measure(m: SyntheticModel, a: DecodeBatchArgs, n: number): Promise<BenchRecord> {
  const batcher = new DecodeBatcher(m.backend, { maxSequences: n });
  const sessions: Record<Setting, Session[]> = { alone: await prefilled(m, a, n), together: await prefilled(m, a, n, batcher) };
  try {
    // One unrecorded round of each compiles pipelines and makes bind groups.
    for (const setting of ['alone', 'together'] as const) await decodeRound(sessions[setting], setting, a);
    const runs: Record<Setting, number[]> = { alone: [], together: [] };
    const before = batcher.stats;
    for (let r = 0; r < a.rounds; r++) {
      const order: Setting[] = r % 2 === 0 ? ['alone', 'together'] : ['together', 'alone'];
      for (const setting of order) runs[setting].push(await decodeRound(sessions[setting], setting, a));
    }
    const after = batcher.stats;
    const spread = (setting: Setting) => ({
      [`${setting}_tok_s`]: round(median(runs[setting])),
      [`${setting}_tok_s_min`]: round(Math.min(...runs[setting])),
      [`${setting}_tok_s_max`]: round(Math.max(...runs[setting])),
    });
    return {
      shape: a.shape,
      context_tokens: a.context,
      decode_tokens: a.decode,
      sequences: n,
      rounds: a.rounds,
      ...spread('alone'),
      ...spread('together'),
      speedup: round(median(runs.together) / median(runs.alone), 3),
      sequences_per_step: round((after.sequences - before.sequences) / Math.max(1, after.steps - before.steps), 3),
    };
  } finally {
    for (const s of [...sessions.alone, ...sessions.together]) s.dispose();
  }
}

export async function run(argv: string[]): Promise<BenchReport> {
  const a = parse(argv);
  const m = await openSyntheticModel(a.shape, SYNTHETIC_SHAPES[a.shape]!, { backend: a.backend, capacity: a.context + a.decode });
  try {
    const records: BenchRecord[] = [];
    for (const n of a.sequences) records.push(await measure(m, a, n));
    return {
      params: {
        shape: a.shape,
        model: `synthetic ${a.shape} (random weights)`,
        parameters: m.info.parameters,
        backend: m.backend.name,
        device: m.backend.device,
        context: a.context,
        decode: a.decode,
        rounds: a.rounds,
        timing:
          'generated tokens/s over a round: N sessions, each with its own context, generate --decode greedy tokens one after another (alone) or together (batched steps); medians and ranges over rounds, the order flipping each round',
      },
      records,
    };
  } finally {
    await m.backend.dispose();
  }
}
