/**
 * Engine throughput: prefill tokens/s of `--contexts` tokens and greedy decode tokens/s of `--decode` tokens after
 * that prefill, for the engine and, where torch and CUDA exist, for transformers on the same shape (bf16, sdpa;
 * bench/peer_prefill.py --decode). Medians of --runs after --warmup; each context size in its own try/catch;
 * --max-seconds stops cleanly between measurements.
 *
 *   npm run bench -- engine --shape llama3.1-8b --contexts 1024,4096,8192 --backend webgpu --out engine-gpu
 *   npm run bench -- engine --shape shipped --contexts 256,1024 --backend cpu --out engine-cpu
 */
import { parseFlags, positiveInt } from './lib/args.ts';
import { SPEED_OPTIONS, speedArgs, type SpeedArgs } from './lib/common-args.ts';
import { argmax } from './lib/logits.ts';
import { openBenchEngine, resolveTarget } from './lib/open-engine.ts';
import { runPeer, type PeerReport } from './lib/peer.ts';
import { median, round } from './lib/stats.ts';
import type { BenchEngine } from './lib/synthetic-engine.ts';
import { randomTokenIds } from './lib/token-ids.ts';
import type { BenchRecord, BenchReport } from './report.ts';

interface EngineArgs extends SpeedArgs {
  decode: number;
  peer: boolean;
}

function parse(args: string[]): EngineArgs {
  const values = parseFlags(args, { ...SPEED_OPTIONS, decode: { type: 'string' }, 'no-peer': { type: 'boolean' } });
  return {
    ...speedArgs(values, { contexts: [256, 1024] }),
    decode: positiveInt(values.decode, 32, 'decode'),
    peer: !values['no-peer'],
  };
}

function record(device: string, shape: string, context: number, mode: 'engine' | 'peer', fields: Partial<BenchRecord>): BenchRecord {
  return {
    device,
    shape,
    context_tokens: context,
    mode,
    prefill_ms: null,
    prefill_tok_s: null,
    decode_tokens: null,
    decode_tok_s: null,
    prefill_vs_peer: null,
    decode_vs_peer: null,
    note: null,
    ...fields,
  };
}

/** One run: prefill `ids`, then `decode` greedy steps one token at a time (each token read back, as a server must). */
async function once(engine: BenchEngine, ids: number[], decode: number): Promise<{ prefillMs: number; decodeMs: number }> {
  const session = engine.createSession(ids.length + decode);
  try {
    const t0 = performance.now();
    let token = argmax(await session.prefill(ids, { logits: 'last' }));
    const t1 = performance.now();
    for (let i = 0; i < decode; i++) token = argmax(await session.prefill([token], { logits: 'last' }));
    return { prefillMs: t1 - t0, decodeMs: performance.now() - t1 };
  } finally {
    session.dispose();
  }
}

async function measureEngine(engine: BenchEngine, a: EngineArgs, shape: string, context: number): Promise<BenchRecord> {
  if (a.deadline.expired) return record(engine.device, shape, context, 'engine', { note: a.deadline.reason });
  try {
    const ids = randomTokenIds(context, engine.info.vocabSize, context);
    for (let i = 0; i < a.warmup; i++) await once(engine, ids, a.decode);
    const runs: { prefillMs: number; decodeMs: number }[] = [];
    for (let i = 0; i < a.runs; i++) runs.push(await once(engine, ids, a.decode));
    const prefillMs = median(runs.map((r) => r.prefillMs));
    const decodeMs = median(runs.map((r) => r.decodeMs));
    return record(engine.device, shape, context, 'engine', {
      prefill_ms: round(prefillMs),
      prefill_tok_s: round((context / prefillMs) * 1000),
      decode_tokens: a.decode,
      decode_tok_s: round((a.decode / decodeMs) * 1000),
    });
  } catch (err) {
    return record(engine.device, shape, context, 'engine', { note: `error: ${(err as Error).message}`.slice(0, 500) });
  }
}

function peerRecord(peer: PeerReport, shape: string, context: number): BenchRecord {
  if (!peer.available) return record('none', shape, context, 'peer', { note: `skipped: ${peer.reason}` });
  const r = peer.byTokens.get(context);
  if (r?.prefill_ms === undefined) return record(peer.device, shape, context, 'peer', { note: r?.error ?? 'no result for this length' });
  return record(peer.device, shape, context, 'peer', {
    prefill_ms: round(r.prefill_ms),
    prefill_tok_s: round((context / r.prefill_ms) * 1000),
    decode_tokens: r.decode_tok_s === undefined ? null : peer.decodeTokens,
    decode_tok_s: r.decode_tok_s === undefined ? null : round(r.decode_tok_s),
    note: peer.label,
  });
}

export async function run(args: string[]): Promise<BenchReport> {
  const a = parse(args);
  const target = await resolveTarget(a.shape, a.model);
  let peer: PeerReport | undefined;
  if (a.peer) {
    const timeoutMs = Number.isFinite(a.deadline.seconds) ? a.deadline.remainingSeconds * 1000 * 0.4 : 60 * 60 * 1000;
    peer = await runPeer({ hfConfig: target.hfConfig, tokens: a.contexts, decode: a.decode, timeoutMs });
  }
  const maxPositions = Number(target.hfConfig.max_position_embeddings);
  const engine = await openBenchEngine(target, a.backend, Math.min(Math.max(...a.contexts) + a.decode, maxPositions));
  const records: BenchRecord[] = [];
  try {
    for (const context of a.contexts) {
      const mine = await measureEngine(engine, a, target.shape, context);
      records.push(mine);
      if (!peer) continue;
      const theirs = peerRecord(peer, target.shape, context);
      if (typeof mine.prefill_tok_s === 'number' && typeof theirs.prefill_tok_s === 'number')
        mine.prefill_vs_peer = round(mine.prefill_tok_s / theirs.prefill_tok_s, 3);
      if (typeof mine.decode_tok_s === 'number' && typeof theirs.decode_tok_s === 'number')
        mine.decode_vs_peer = round(mine.decode_tok_s / theirs.decode_tok_s, 3);
      records.push(theirs);
    }
    return {
      params: {
        shape: target.shape,
        model: target.modelDir ?? `synthetic ${target.shape} (random weights)`,
        parameters: engine.info.parameters,
        backend: engine.backend,
        device: engine.device,
        decodeTokens: a.decode,
        runs: a.runs,
        warmup: a.warmup,
        peer: peer === undefined ? 'not requested' : peer.available ? `${peer.label} on ${peer.device}` : `unavailable: ${peer.reason}`,
        maxSeconds: Number.isFinite(a.deadline.seconds) ? a.deadline.seconds : null,
        timing:
          'prefill: context tokens to the first token id on the host; decode: greedy steps of one token after it, each read back; *_vs_peer: engine / transformers throughput',
      },
      records,
    };
  } finally {
    await engine.dispose();
  }
}
