/**
 * What each KV codec and composition mode costs in answer quality, against full recompute of the same prompt
 * ([BOS] + context + prompt), on the shipped model with held-out documents (bench/data/heldout/) and continuation
 * prompts about them (bench/data/questions.json).
 *
 * Two context sets: `document` (one document cut into --chunk-token chunks, in order) and `composed` (chunks of 2-4
 * documents: the prompted document's chunks with one chunk of each of 1-3 other documents before, inside and after
 * them, as a retrieval query composes them). Every chunk's KV goes through the real path (exportKV ->
 * encodeKVObject -> bytes -> readKVObject -> injection) after a freshly prefilled BOS, then the prompt is answered:
 *   prefix-chained: chunk i computed after the chunks before it (exported from the recompute session itself);
 *   independent: each chunk computed alone after a BOS (positionBase 1), placed at its position by re-rotation;
 *   blend: independent chunks, then Session.blendKVAndPrefill recomputes a --ratios share of the context's tokens
 *          with the prompt, picked by each selection (engine-adapter/blend-selection.ts);
 *   oracle (asked for by name): blend's ceiling, independent chunks with a --ratios share of the tokens given the full
 *          prefill's exact KV, picked by their deviation from it per layer or per token (bench/lib/oracle-mix.ts).
 * Per (set, codec, mode), over every answer position (the recompute's greedy answer of --answer tokens,
 * teacher-forced): top-1 agreement with recompute, mean KL(recompute || inject); per prompt: exact match of the
 * free-running greedy answer; and the stored bytes per token. Blend rows add the share of context tokens recomputed.
 *
 *   npm run bench -- fidelity [--model models/kdn-reader] [--backend cpu] [--chunk 128] [--answer 32]
 *     [--sets document,composed] [--modes prefix-chained,independent,blend,oracle] [--ratios 0.05,0.1,0.15,0.2,0.3]
 *     [--selections deviation,chunk-start,combined] [--blend-codecs fp16,...,int4+lz4] [--alt-codecs int8]
 *     [--codecs ...,transform:x4,...,transform:x20] [--calibration shipped|context]
 * Blend runs every --blend-codecs codec with the first selection and the --alt-codecs codecs with the others.
 * Transform levels use a table fitted as kdn fits it, on the shipped calibration text; --calibration context fits one
 * per context on its own prefix-chained KV instead (in-sample: how much a table fitted on the data itself gains).
 */
import { join, resolve } from 'node:path';
import { KdnError } from '../common/errors.ts';
import {
  BLEND_SELECTIONS,
  createEngine,
  kvBeforeRope,
  loadModelConfig,
  type BlendSelection,
  type Engine,
  type ModelConfig,
  type Session,
} from '../engine-adapter/index.ts';
import { codecFromString, encodeKVObject, readKVObject, TRANSFORM_LEVELS } from '../storage/kv-object/index.ts';
import type { KVTensors } from '../storage/kv-object/types.ts';
import { greedyAnswer, greedyFrom, teacherForced, type GreedyAnswer } from './lib/answer.ts';
import { choice, choiceList, parseFlags, positiveInt } from './lib/args.ts';
import { byteStream } from './lib/byte-stream.ts';
import { TransformSetup } from './lib/transform-setup.ts';
import { loadDocuments, tokenizeDocuments, type FidelityDocument, type TokenizedDocument } from './lib/fidelity-data.ts';
import { argmax, klDivergence } from './lib/logits.ts';
import { ORACLE_SELECTIONS, OracleMixer } from './lib/oracle-mix.ts';
import { DEFAULT_MODEL_DIR } from '../kdn/default-model.ts';
import { round } from './lib/stats.ts';
import type { BenchRecord, BenchReport } from './report.ts';

const BASE_CODECS = ['fp16', 'fp16+lz4', 'int8', 'int8+lz4', 'int4', 'int4+lz4'] as const;
const TRANSFORM_CODECS = TRANSFORM_LEVELS.map((l) => `transform:${l.name}`);
const CODECS = [...BASE_CODECS, ...TRANSFORM_CODECS];
const CALIBRATIONS = ['shipped', 'context'] as const;
const MODES = ['prefix-chained', 'independent', 'blend', 'oracle'] as const;
const DEFAULT_MODES = MODES.filter((m) => m !== 'oracle');
export const SETS = ['document', 'composed'] as const;
const RATIOS = [0.05, 0.1, 0.15, 0.2, 0.3];
type Mode = (typeof MODES)[number];
export type ContextSet = (typeof SETS)[number];

const BENCH_DIR = import.meta.dirname;

interface FidelityArgs {
  model: string;
  backend: 'auto' | 'webgpu' | 'cpu';
  chunk: number;
  answer: number;
  maxDocTokens: number;
  docs: number;
  prompts: number;
  codecs: string[];
  modes: Mode[];
  sets: ContextSet[];
  ratios: number[];
  selections: BlendSelection[];
  blendCodecs: string[];
  altCodecs: string[];
  questions: string;
  heldout: string;
  calibration: (typeof CALIBRATIONS)[number];
}

function ratioList(value: string | undefined): number[] {
  if (value === undefined) return RATIOS;
  const out = value.split(',').map((s) => Number(s.trim()));
  if (out.length === 0 || out.some((r) => !(r >= 0 && r <= 1))) {
    throw new KdnError('INVALID_ARGUMENT', `--ratios must be fractions in [0, 1], got "${value}"`, { hint: 'e.g. --ratios 0.1,0.15' });
  }
  return out;
}

function parse(args: string[]): FidelityArgs {
  const values = parseFlags(args, {
    model: { type: 'string' },
    backend: { type: 'string' },
    chunk: { type: 'string' },
    answer: { type: 'string' },
    'max-doc-tokens': { type: 'string' },
    docs: { type: 'string' },
    prompts: { type: 'string' },
    codecs: { type: 'string' },
    modes: { type: 'string' },
    sets: { type: 'string' },
    ratios: { type: 'string' },
    selections: { type: 'string' },
    'blend-codecs': { type: 'string' },
    'alt-codecs': { type: 'string' },
    questions: { type: 'string' },
    heldout: { type: 'string' },
    calibration: { type: 'string' },
  });
  return {
    model: resolve(values.model ?? DEFAULT_MODEL_DIR),
    backend: choice(values.backend, 'cpu', ['auto', 'webgpu', 'cpu'] as const, 'backend'),
    chunk: positiveInt(values.chunk, 128, 'chunk'),
    answer: positiveInt(values.answer, 32, 'answer'),
    maxDocTokens: positiveInt(values['max-doc-tokens'], 1024, 'max-doc-tokens'),
    docs: positiveInt(values.docs, Infinity, 'docs'),
    prompts: positiveInt(values.prompts, Infinity, 'prompts'),
    codecs: choiceList(values.codecs, CODECS, CODECS, 'codecs'),
    modes: choiceList(values.modes, DEFAULT_MODES, MODES, 'modes'),
    sets: choiceList(values.sets, SETS, SETS, 'sets'),
    ratios: ratioList(values.ratios),
    selections: choiceList(values.selections, BLEND_SELECTIONS, BLEND_SELECTIONS, 'selections'),
    blendCodecs: choiceList(values['blend-codecs'], BASE_CODECS, CODECS, 'blend-codecs'),
    altCodecs: choiceList(values['alt-codecs'], ['int8'], CODECS, 'alt-codecs'),
    questions: resolve(values.questions ?? join(BENCH_DIR, 'data', 'questions.json')),
    heldout: resolve(values.heldout ?? join(BENCH_DIR, 'data', 'heldout')),
    calibration: choice(values.calibration, 'shipped', CALIBRATIONS, 'calibration'),
  };
}

/** A context to answer prompts over: its chunks' token ids in context order, after a BOS. */
export interface Context {
  set: ContextSet;
  label: string;
  chunks: number[][];
  prompts: number[][];
}

/** A document's tokens cut into chunks of `chunk`. */
function cut(doc: number[], chunk: number): number[][] {
  const out = [];
  for (let s = 0; s < doc.length; s += chunk) out.push(doc.slice(s, s + chunk));
  return out;
}

/**
 * The contexts of the chosen sets. A composed context for document i holds its chunks with the first chunk of each
 * of the next 1 + i % 3 documents: one before them, one in their middle, one after.
 */
export function buildContexts(docs: readonly TokenizedDocument[], a: Pick<FidelityArgs, 'chunk' | 'sets'>): Context[] {
  const out: Context[] = [];
  for (const [i, d] of docs.entries()) {
    const own = cut(d.tokens, a.chunk);
    if (a.sets.includes('document'))
      out.push({
        set: 'document',
        label: `${d.file} (${d.tokens.length} tokens, ${d.prompts.length} prompts)`,
        chunks: own,
        prompts: d.prompts,
      });
    if (!a.sets.includes('composed') || docs.length < 2) continue;
    const others = Array.from({ length: Math.min(1 + (i % 3), docs.length - 1) }, (_, k) => docs[(i + 1 + k) % docs.length]!);
    const extra = others.map((o) => cut(o.tokens, a.chunk)[0]!);
    const mid = Math.ceil(own.length / 2);
    const chunks = [extra[0]!, ...own.slice(0, mid), ...(extra[1] ? [extra[1]] : []), ...own.slice(mid), ...(extra[2] ? [extra[2]] : [])];
    out.push({ set: 'composed', label: `${d.file} + ${others.map((o) => o.file).join(' + ')}`, chunks, prompts: d.prompts });
  }
  return out;
}

/** A chunk's token ids and its KV as exported by the engine. */
export interface Chunk {
  ids: number[];
  kv: KVTensors;
}

/** prefix-chained: exported from the session that prefilled [BOS] + the whole context. */
export async function prefixChainedChunks(reference: Session, context: Context): Promise<Chunk[]> {
  const out: Chunk[] = [];
  let at = 1;
  for (const ids of context.chunks) {
    out.push({ ids, kv: await reference.exportKV({ start: at, end: at + ids.length }) });
    at += ids.length;
  }
  return out;
}

/** independent: each chunk prefilled alone after a BOS, so its KV has positionBase 1 and sees no other chunk. */
async function independentChunks(engine: Engine, bos: number, context: Context): Promise<Chunk[]> {
  const out: Chunk[] = [];
  for (const ids of context.chunks) {
    const session = engine.createSession({ capacity: ids.length + 1 });
    try {
      await session.prefill([bos, ...ids], { logits: 'none' });
      out.push({ ids, kv: await session.exportKV({ start: 1, end: 1 + ids.length }) });
    } finally {
      session.dispose();
    }
  }
  return out;
}

/** One row of the report: a (set, codec, mode[, selection, ratio]) and its totals over contexts and prompts. */
export interface Tally {
  key: Record<string, string | number>;
  positions: number;
  agree: number;
  klSum: number;
  prompts: number;
  exact: number;
  bytes: number;
  tokens: number;
  recomputed: number;
  contextTokens: number;
}

/**
 * Scores a session that holds [BOS] + context + prompt, whose prompt's last logits are `first`, against the
 * recompute's answer: the free-running greedy answer, then the answer teacher-forced from `afterPrompt`.
 */
export async function score(
  session: Session,
  afterPrompt: number,
  first: Float32Array,
  reference: GreedyAnswer,
  vocab: number,
  tally: Pick<Tally, 'positions' | 'agree' | 'klSum' | 'prompts' | 'exact'>,
): Promise<void> {
  const free = await greedyFrom(session, first, reference.tokens.length);
  session.truncate(afterPrompt);
  const rows = await teacherForced(session, first, reference.tokens, vocab);
  rows.forEach((row, j) => {
    tally.positions++;
    if (argmax(row) === reference.tokens[j]) tally.agree++;
    tally.klSum += klDivergence(reference.logits[j]!, 0, row, 0, vocab);
  });
  tally.prompts++;
  if (free.tokens.every((t, j) => t === reference.tokens[j])) tally.exact++;
}

/** The blend runs asked for: the first selection with every blend codec, the others with the alt codecs. */
function blendRuns(a: FidelityArgs): { codec: string; selection: BlendSelection; ratio: number }[] {
  const out = [];
  for (const [i, selection] of a.selections.entries()) {
    const codecs = (i === 0 ? a.blendCodecs : a.altCodecs).filter((c) => a.codecs.includes(c));
    for (const codec of codecs) for (const ratio of a.ratios) out.push({ codec, selection, ratio });
  }
  return out;
}

/** Injects `objects` after a BOS and scores every prompt of `context` against the reference's `answers`. */
export async function answerInjected(
  engine: Engine,
  bos: number,
  objects: readonly Uint8Array[],
  context: Context,
  answers: readonly GreedyAnswer[],
  t: Pick<Tally, 'positions' | 'agree' | 'klSum' | 'prompts' | 'exact'>,
): Promise<void> {
  const contextLength = 1 + context.chunks.reduce((n, c) => n + c.length, 0);
  const session = engine.createSession({ capacity: Math.min(engine.info.maxPositionEmbeddings, 8192) });
  try {
    await session.prefill([bos], { logits: 'none' });
    for (const bytes of objects) await session.injectKV(await readKVObject(byteStream(bytes)), session.length);
    for (const [i, p] of context.prompts.entries()) {
      session.truncate(contextLength);
      const first = await session.prefill(p, { logits: 'last' });
      await score(session, contextLength + p.length, first, answers[i]!, engine.info.vocabSize, t);
    }
  } finally {
    session.dispose();
  }
}

/** Runs every mode of `a` over one context, adding to the tallies. */
async function runContext(
  engine: Engine,
  bos: number,
  context: Context,
  a: FidelityArgs,
  tally: (key: Record<string, string | number>) => Tally,
  shipped: TransformSetup | undefined,
  rope: ModelConfig,
): Promise<void> {
  const vocab = engine.info.vocabSize;
  const { fingerprint } = engine.info;
  const capacity = Math.min(engine.info.maxPositionEmbeddings, 8192);
  const contextIds = context.chunks.flat();
  const contextLength = 1 + contextIds.length;
  let transform = shipped;
  const encode = (chunks: Chunk[], codec: string): Uint8Array[] =>
    chunks.map((c) =>
      transform
        ? transform.encode(c.kv, c.ids, fingerprint, codec)
        : encodeKVObject(c.kv, { modelFingerprint: fingerprint, tokenIds: c.ids, codec: codecFromString(codec) }),
    );
  const count = (t: Tally, objects: Uint8Array[]): void => {
    t.bytes += objects.reduce((sum, o) => sum + o.length, 0);
    t.tokens += contextIds.length;
  };
  const reference = engine.createSession({ capacity });
  try {
    await reference.prefill([bos, ...contextIds], { logits: 'none' });
    const answers: GreedyAnswer[] = [];
    for (const p of context.prompts) {
      reference.truncate(contextLength);
      answers.push(await greedyAnswer(reference, p, a.answer));
    }
    reference.truncate(contextLength);
    const independent = a.modes.some((m) => m !== 'prefix-chained') ? await independentChunks(engine, bos, context) : [];
    for (const mode of a.modes.filter((m) => m === 'prefix-chained' || m === 'independent')) {
      const chunks = mode === 'prefix-chained' ? await prefixChainedChunks(reference, context) : independent;
      // In-sample table: fitted on this context's own prefix-chained KV, the best a table can do on it.
      if (shipped && a.calibration === 'context' && mode === 'prefix-chained')
        transform = await shipped.withTableFrom(
          chunks.map((c) => c.kv),
          fingerprint,
        );
      for (const codec of a.codecs) {
        const t = tally({ set: context.set, codec, mode });
        const objects = encode(chunks, codec);
        count(t, objects);
        await answerInjected(engine, bos, objects, context, answers, t);
      }
    }
    if (a.modes.includes('oracle')) {
      const exact = await prefixChainedChunks(reference, context);
      const mixer = new OracleMixer(
        independent.map((c) => kvBeforeRope(c.kv, rope)),
        exact.map((c) => kvBeforeRope(c.kv, rope)),
      );
      for (const selection of ORACLE_SELECTIONS)
        for (const ratio of a.ratios) {
          const t = tally({ set: context.set, codec: 'fp16', mode: 'oracle', selection, ratio });
          const mixed = mixer.mix(ratio, selection);
          const objects = encode(
            mixed.chunks.map((kv, j) => ({ ids: independent[j]!.ids, kv })),
            'fp16',
          );
          count(t, objects);
          t.recomputed += mixed.replaced * context.prompts.length;
          t.contextTokens += contextIds.length * context.prompts.length;
          await answerInjected(engine, bos, objects, context, answers, t);
        }
    }
    if (!a.modes.includes('blend')) return;
    for (const run of blendRuns(a)) {
      const t = tally({ set: context.set, codec: run.codec, mode: 'blend', selection: run.selection, ratio: run.ratio });
      const objects = encode(independent, run.codec);
      count(t, objects);
      for (const [i, p] of context.prompts.entries()) {
        const session = engine.createSession({ capacity });
        try {
          await session.prefill([bos], { logits: 'none' });
          const chunks = await Promise.all(
            objects.map(async (bytes, j) => ({ object: await readKVObject(byteStream(bytes)), tokenIds: independent[j]!.ids })),
          );
          const blended = await session.blendKVAndPrefill(chunks, p, { ratio: run.ratio, selection: run.selection });
          t.recomputed += blended.recomputed;
          t.contextTokens += contextIds.length;
          await score(session, contextLength + p.length, blended.logits, answers[i]!, vocab, t);
        } finally {
          session.dispose();
        }
      }
    }
  } finally {
    reference.dispose();
  }
}

function record(t: Tally, fp16BytesPerToken: number): BenchRecord {
  const bytesPerToken = t.bytes / t.tokens;
  return {
    ...t.key,
    top1_agreement: round(t.agree / t.positions),
    mean_kl: round(t.klSum / t.positions, 3),
    exact_match: round(t.exact / t.prompts),
    ...(t.contextTokens > 0 ? { recomputed_fraction: round(t.recomputed / t.contextTokens, 3) } : {}),
    bytes_per_token: round(bytesPerToken, 5),
    vs_fp16_raw: round(bytesPerToken / fp16BytesPerToken, 3),
    positions: t.positions,
    prompts: t.prompts,
  };
}

export async function run(args: string[]): Promise<BenchReport> {
  const a = parse(args);
  const engine = await createEngine({ modelDir: a.model, backend: a.backend });
  try {
    const { tokenizer } = engine;
    const bos = tokenizer.bosTokenId;
    if (bos === undefined)
      throw new KdnError('MODEL_UNSUPPORTED', 'the fidelity benchmark needs a model with a BOS token', {
        hint: 'use a Llama-family model',
      });
    const capacity = Math.min(engine.info.maxPositionEmbeddings, 8192);
    const loaded: FidelityDocument[] = await loadDocuments(a.questions, a.heldout, a.docs, a.prompts);
    const docs = tokenizeDocuments(tokenizer, loaded, { capacity, chunk: a.chunk, answer: a.answer, maxDocTokens: a.maxDocTokens });
    const tallies = new Map<string, Tally>();
    const tally = (key: Record<string, string | number>): Tally => {
      const id = JSON.stringify(key);
      let t = tallies.get(id);
      if (!t)
        tallies.set(
          id,
          (t = { key, positions: 0, agree: 0, klSum: 0, prompts: 0, exact: 0, bytes: 0, tokens: 0, recomputed: 0, contextTokens: 0 }),
        );
      return t;
    };
    const contexts = buildContexts(docs, a);
    const shipped = a.codecs.some((c) => c.startsWith('transform')) ? await TransformSetup.shipped(engine) : undefined;
    const rope = await loadModelConfig(engine.info.path);
    for (const context of contexts) {
      if (!process.env.KDN_TEST) process.stderr.write(`fidelity: ${context.set}: ${context.label}\n`);
      await runContext(engine, bos, context, a, tally, shipped, rope);
    }
    const fp16BytesPerToken = engine.info.kvBytesPerToken;
    return {
      params: {
        model: a.model,
        fingerprint: engine.info.fingerprint,
        parameters: engine.info.parameters,
        backend: engine.backend,
        device: engine.device,
        documents: contexts
          .filter((c) => c.set === 'document')
          .map((c) => c.label)
          .join('; '),
        composed: contexts
          .filter((c) => c.set === 'composed')
          .map((c) => c.label)
          .join('; '),
        questions: a.questions,
        chunkTokens: a.chunk,
        answerTokens: a.answer,
        transformCalibration: shipped ? `${a.calibration} (table ${shipped.table.hash.slice(0, 12)})` : 'none',
        fp16KvBytesPerToken: fp16BytesPerToken,
        method:
          'reference: [BOS]+context+prompt prefilled, greedy answer of answerTokens (no stop token); inject: [BOS] prefilled, ' +
          'context chunks injected from encoded KV objects (blend: recomputing recomputed_fraction of the context with the prompt), ' +
          'same prompt; top1_agreement and mean_kl (nats, KL(recompute||inject)) over answer positions teacher-forced on the ' +
          'reference answer; exact_match: free-running greedy answer equal to the reference',
      },
      records: [...tallies.values()].map((t) => record(t, fp16BytesPerToken)),
    };
  } finally {
    await engine.dispose();
  }
}
