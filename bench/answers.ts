/**
 * Task accuracy of the default model and of every KV mode and codec: does it answer from the documents?
 *
 * Sections (--sections, default all three):
 *   retrieval: recall@1/@4 and MRR of chunk retrieval on the held-out natural questions (bench/data/retrieval),
 *     kdn's ChunkIndex (tunings side by side) against the configuration it replaced;
 *   synthetic: held-out reading-comprehension examples (bench/data/answers/synthetic.json: single-passage and
 *     two-passage "bridge" questions with distractor passages, from documents training never saw), answered with
 *     the context built by each mode below, every codec through the real KV object path (exportKV ->
 *     encodeKVObject -> bytes -> readKVObject -> injectKV);
 *   natural: the natural questions about manual pages and prose, the context being the top-k retrieved chunks
 *     (as `kdn serve` plans them), answered with full prefill.
 * Modes (MODES): recompute ([sink] + pieces + prompt prefilled), prefix-chained (each piece's KV exported from the
 * recompute session: exact when the pieces are read in that order), independent (each piece computed alone after
 * the sink, placed at its position by re-rotation), blend (the independent pieces blended with the prompt as kdn
 * blends a query by default, kdn/query/blend-policy.ts: 15% of the context's tokens recomputed, chosen by the
 * prompt's attention). The prompt is kdn's (kdn/query/prompt.ts); answers are greedy, to
 * EOS or a new line, scored by exact match and token F1 (SQuAD normalization).
 *
 *   npm run bench -- answers [--model DIR] [--sections retrieval,synthetic,natural] [--single 20] [--bridge 10]
 *       [--natural N] [--codecs fp16,int8,...,transform:x8] [--modes recompute,prefix-chained,independent]
 *       [--max-new 24]
 * Transform levels (transform:x4 ... x20) run only when named; their table is fitted first, as ingest fits it.
 *
 * On a 2-core CPU an example takes about a minute (two prefills of up to 1,800 tokens and 13 answers), a natural
 * question about 20 s; the results files were made as four runs:
 *   npm run bench -- answers --sections synthetic,natural --single 20 --bridge 10 --natural 20
 *       --codecs fp16,int8,int4                                   (bench/results/answers.json, every mode)
 *   npm run bench -- answers --sections synthetic --single 60 --bridge 40 --modes recompute --codecs fp16
 *       --out answers-heldout                                     (the whole held-out set, full prefill)
 *   npm run bench -- answers --sections retrieval --out answers-retrieval
 *   npm run bench -- answers --sections synthetic --single 20 --bridge 10 --codecs transform:x4,transform:x8
 *       --out answers-transform
 */
import { join, resolve } from 'node:path';
import { readFile } from 'node:fs/promises';
import { z } from 'zod';
import { KdnError } from '../common/errors.ts';
import { createEngine, type Engine, type Session } from '../engine-adapter/index.ts';
import type { KVTensors } from '../storage/kv-object/types.ts';
import { readKVObject, TRANSFORM_LEVELS, type KVObjectReader } from '../storage/kv-object/index.ts';
import { ANSWER_STOP_STRINGS, questionPrompt } from '../kdn/query/prompt.ts';
import { DEFAULT_BLEND } from '../kdn/query/blend-policy.ts';
import { DEFAULT_SEARCH_TUNING } from '../kdn/retrieval/chunk-index.ts';
import { exactMatch, tokenF1 } from './lib/answer-score.ts';
import { choiceList, parseFlags, positiveInt } from './lib/args.ts';
import { byteStream } from './lib/byte-stream.ts';
import { PLAIN_ENCODER, TransformSetup, type KVEncoder } from './lib/transform-setup.ts';
import { chunkIndexSearch, measureRecall, previousSearch } from './lib/retrieval-recall.ts';
import { loadHeldOutSet, type HeldOutSet } from './lib/retrieval-set.ts';
import { DEFAULT_MODEL_DIR } from '../kdn/default-model.ts';
import { round } from './lib/stats.ts';
import type { BenchRecord, BenchReport, Checkpoint } from './report.ts';

const CODECS = ['fp16', 'fp16+lz4', 'int8', 'int8+lz4', 'int4', 'int4+lz4'] as const;
/** Asked for by name only: each needs a table fitted on the model first, as ingest fits it (over a minute of CPU). */
const TRANSFORM_CODECS = TRANSFORM_LEVELS.map((l) => `transform:${l.name}`);
const SECTIONS = ['retrieval', 'synthetic', 'natural'] as const;
const BENCH_DIR = import.meta.dirname;
const CHUNK_TOKENS = 256; // kdn serve's default chunk budget
const TOP_K = 4; // kdn's default topK

/** What a mode builds a context from: the sink, the pieces' tokens, and the KV each way of computing gives. */
interface ModeInput {
  engine: Engine;
  /** Encodes objects; holds the transform table when a transform codec is asked for. */
  encoder: KVEncoder;
  sink: number;
  pieces: number[][];
  /** The session holding [sink] + every piece, prefilled in one pass. */
  reference: () => Promise<Session>;
  /** Each piece's KV as the reference session computed it (what prefix-chained objects hold). */
  chainedKV: () => Promise<KVTensors[]>;
  /** Each piece's KV computed alone after the sink (what independent objects hold). */
  independentKV: () => Promise<KVTensors[]>;
}

interface Mode {
  /** Whether the mode's context goes through stored KV objects (and so runs once per codec). */
  usesCodec: boolean;
  /**
   * A session holding [sink] + the context + `prompt`, its last logits computed, ready to generate; the caller
   * releases it (ModeRun.release).
   */
  start(input: ModeInput, codec: string | null, prompt: number[]): Promise<Session>;
}

/** The modes, one entry each: adding a mode is adding an entry. */
const MODES = {
  recompute: { usesCodec: false, start: (input, _codec, prompt) => prompted(input.reference(), prompt) },
  'prefix-chained': {
    usesCodec: true,
    start: (input, codec, prompt) => prompted(injected(input, codec!, input.chainedKV), prompt),
  },
  independent: {
    usesCodec: true,
    start: (input, codec, prompt) => prompted(injected(input, codec!, input.independentKV), prompt),
  },
  blend: { usesCodec: true, start: (input, codec, prompt) => blended(input, codec!, prompt) },
} satisfies Record<string, Mode>;
type ModeName = keyof typeof MODES;
const MODE_NAMES = Object.keys(MODES) as ModeName[];

function capacityOf(input: ModeInput): number {
  return input.engine.info.maxPositionEmbeddings;
}

async function prompted(context: Promise<Session>, prompt: number[]): Promise<Session> {
  const session = await context;
  await session.prefill(prompt, { logits: 'last' });
  return session;
}

/** Piece i's KV encoded with `codec` and read back from the bytes, as a query reads a stored object. */
function storedObject(input: ModeInput, codec: string, tensors: KVTensors[], i: number): Promise<KVObjectReader> {
  const bytes = input.encoder.encode(tensors[i]!, input.pieces[i]!, input.engine.info.fingerprint, codec);
  return readKVObject(byteStream(bytes));
}

/** A new session holding only the sink. */
async function sinkSession(input: ModeInput): Promise<Session> {
  const session = input.engine.createSession({ capacity: capacityOf(input) });
  await session.prefill([input.sink], { logits: 'none' });
  return session;
}

/** [sink] prefilled, then each piece's stored KV injected in order. */
async function injected(input: ModeInput, codec: string, kv: () => Promise<KVTensors[]>): Promise<Session> {
  const tensors = await kv();
  const session = await sinkSession(input);
  for (const i of tensors.keys()) await session.injectKV(await storedObject(input, codec, tensors, i), session.length);
  return session;
}

/** [sink] prefilled, then the independent pieces' stored KV blended with the prompt as kdn blends a query. */
async function blended(input: ModeInput, codec: string, prompt: number[]): Promise<Session> {
  const tensors = await input.independentKV();
  const session = await sinkSession(input);
  const chunks = await Promise.all(
    tensors.map(async (_, i) => ({ object: await storedObject(input, codec, tensors, i), tokenIds: input.pieces[i]! })),
  );
  await session.blendKVAndPrefill(chunks, prompt, DEFAULT_BLEND);
  return session;
}

interface ModeRun {
  input: ModeInput;
  /** Disposes a session a mode built, unless it is the shared reference. */
  release: (session: Session) => void;
  dispose: () => void;
}

function modeRun(engine: Engine, encoder: KVEncoder, sink: number, pieces: number[][]): ModeRun {
  let reference: Session | null = null;
  let chained: KVTensors[] | null = null;
  let independent: KVTensors[] | null = null;
  const input: ModeInput = {
    engine,
    encoder,
    sink,
    pieces,
    reference: async () => (reference ??= await prefillAll(input)),
    chainedKV: async () => {
      if (chained) return chained;
      const session = await input.reference();
      chained = [];
      let start = 1;
      for (const p of pieces) {
        chained.push(await session.exportKV({ start, end: start + p.length }));
        start += p.length;
      }
      return chained;
    },
    independentKV: async () => {
      if (independent) return independent;
      independent = [];
      for (const p of pieces) {
        const session = engine.createSession({ capacity: p.length + 1 });
        try {
          await session.prefill([sink, ...p], { logits: 'none' });
          independent.push(await session.exportKV({ start: 1, end: 1 + p.length }));
        } finally {
          session.dispose();
        }
      }
      return independent;
    },
  };
  return { input, release: (session) => session !== reference && session.dispose(), dispose: () => reference?.dispose() };
}

async function prefillAll(input: ModeInput): Promise<Session> {
  const session = input.engine.createSession({ capacity: capacityOf(input) });
  await session.prefill([input.sink, ...input.pieces.flat()], { logits: 'none' });
  return session;
}

function promptIds(engine: Engine, question: string): number[] {
  return engine.tokenizer.encode(questionPrompt(question), { addSpecialTokens: false });
}

/**
 * The greedy answer of a session `start` left holding a context and `prompt`; decoding stops at a new line, as only
 * the first line is scored. The session goes back to its context (a shared reference session answers again).
 */
async function answer(session: Session, prompt: number[], maxNew: number): Promise<string> {
  const contextLength = session.length - prompt.length;
  const result = await session.generate({ maxTokens: maxNew, temperature: 0, stopStrings: [...ANSWER_STOP_STRINGS, '\n'] });
  session.truncate(contextLength);
  return result.text.split('\n')[0]!.trim();
}

const examplesSchema = z.object({
  examples: z
    .array(
      z.object({
        kind: z.enum(['single', 'bridge']),
        rule: z.string(),
        source: z.string(),
        question: z.string().min(1),
        answer: z.string().min(1),
        pieces: z.array(z.string()).min(1),
      }),
    )
    .min(1),
});
type Example = z.infer<typeof examplesSchema>['examples'][number];

interface AnswersArgs {
  model: string;
  sections: (typeof SECTIONS)[number][];
  single: number;
  bridge: number;
  natural: number;
  codecs: string[];
  modes: ModeName[];
  maxNew: number;
  synthetic: string;
  retrieval: string;
}

function parse(args: string[]): AnswersArgs {
  const v = parseFlags(args, {
    model: { type: 'string' },
    sections: { type: 'string' },
    single: { type: 'string' },
    bridge: { type: 'string' },
    natural: { type: 'string' },
    codecs: { type: 'string' },
    modes: { type: 'string' },
    'max-new': { type: 'string' },
    synthetic: { type: 'string' },
    retrieval: { type: 'string' },
  });
  return {
    model: resolve(v.model ?? DEFAULT_MODEL_DIR),
    sections: choiceList(v.sections, SECTIONS, SECTIONS, 'sections'),
    single: positiveInt(v.single, 20, 'single'),
    bridge: positiveInt(v.bridge, 10, 'bridge'),
    natural: positiveInt(v.natural, Infinity, 'natural'),
    codecs: choiceList(v.codecs, CODECS, [...CODECS, ...TRANSFORM_CODECS], 'codecs'),
    modes: choiceList(v.modes, MODE_NAMES, MODE_NAMES, 'modes'),
    maxNew: positiveInt(v['max-new'], 24, 'max-new'),
    synthetic: resolve(v.synthetic ?? join(BENCH_DIR, 'data', 'answers', 'synthetic.json')),
    retrieval: resolve(v.retrieval ?? join(BENCH_DIR, 'data', 'retrieval', 'questions.json')),
  };
}

async function loadExamples(path: string, single: number, bridge: number): Promise<Example[]> {
  let parsed: z.infer<typeof examplesSchema>;
  try {
    parsed = examplesSchema.parse(JSON.parse(await readFile(path, 'utf8')));
  } catch (err) {
    throw new KdnError('INVALID_ARGUMENT', `cannot use ${path}: ${(err as Error).message}`, {
      hint: 'make it with tools/train/make_eval_set.py',
    });
  }
  const of = (kind: string, n: number) => parsed.examples.filter((e) => e.kind === kind).slice(0, n);
  return [...of('single', single), ...of('bridge', bridge)];
}

/** Exact-match and F1 sums of one (mode, codec) by question kind, and how often it answered as recompute did. */
class Tally {
  private readonly sums = new Map<string, { n: number; exact: number; f1: number }>();
  sameAsRecompute = 0;
  answered = 0;

  add(kind: string, prediction: string, truth: string, recomputeAnswer: string | undefined): void {
    const s = this.sums.get(kind) ?? { n: 0, exact: 0, f1: 0 };
    s.n++;
    s.exact += exactMatch(prediction, truth);
    s.f1 += tokenF1(prediction, truth);
    this.sums.set(kind, s);
    this.answered++;
    if (recomputeAnswer !== undefined && prediction === recomputeAnswer) this.sameAsRecompute++;
  }

  columns(kinds: string[]): BenchRecord {
    const out: BenchRecord = {};
    for (const kind of kinds) {
      const s = this.sums.get(kind);
      out[`exact_${kind}`] = s ? round(s.exact / s.n, 3) : null;
      out[`f1_${kind}`] = s ? round(s.f1 / s.n, 3) : null;
      out[`n_${kind}`] = s?.n ?? 0;
    }
    out.same_answer_as_recompute = this.answered ? round(this.sameAsRecompute / this.answered, 3) : null;
    return out;
  }
}

/** Every (mode, codec) the arguments ask for, recompute first so the others can be compared with its answers. */
function runs(a: AnswersArgs): { mode: ModeName; codec: string | null }[] {
  const order = [...a.modes].sort((x, y) => Number(y === 'recompute') - Number(x === 'recompute'));
  return order.flatMap((mode): { mode: ModeName; codec: string | null }[] =>
    MODES[mode].usesCodec ? a.codecs.map((codec) => ({ mode, codec })) : [{ mode, codec: null }],
  );
}

async function synthetic(
  engine: Engine,
  sink: number,
  a: AnswersArgs,
  progress: (records: BenchRecord[]) => Promise<void>,
): Promise<{ records: BenchRecord[]; samples: string[]; table?: string }> {
  const examples = await loadExamples(a.synthetic, a.single, a.bridge);
  // Fitted as kdn's ingest fits it, on the shipped calibration text, never on the examples.
  const transform = a.codecs.some((c) => c.startsWith('transform')) ? await TransformSetup.shipped(engine) : undefined;
  const encoder = transform ?? PLAIN_ENCODER;
  const plan = runs(a);
  const tallies = new Map(plan.map((r) => [`${r.mode}|${r.codec}`, new Tally()]));
  const samples: string[] = [];
  const rows = (): BenchRecord[] =>
    plan.map((r) => ({
      section: 'synthetic',
      mode: r.mode,
      codec: r.codec ?? 'none (prefill)',
      ...tallies.get(`${r.mode}|${r.codec}`)!.columns(['single', 'bridge']),
    }));
  for (const [i, ex] of examples.entries()) {
    const pieces = ex.pieces.map((p) => engine.tokenizer.encode(p, { addSpecialTokens: false }));
    const run = modeRun(engine, encoder, sink, pieces);
    let recomputeAnswer: string | undefined;
    const prompt = promptIds(engine, ex.question);
    try {
      for (const r of plan) {
        const session = await MODES[r.mode].start(run.input, r.codec, prompt);
        try {
          const got = await answer(session, prompt, a.maxNew);
          if (r.mode === 'recompute') {
            recomputeAnswer = got;
            if (samples.length < 16) samples.push(`${ex.kind} Q: ${ex.question} | expected: ${ex.answer} | model: ${got}`);
          }
          tallies.get(`${r.mode}|${r.codec}`)!.add(ex.kind, got, ex.answer, recomputeAnswer);
        } finally {
          run.release(session);
        }
      }
    } finally {
      run.dispose();
    }
    if (!process.env.KDN_TEST) process.stderr.write(`answers: synthetic ${i + 1}/${examples.length}\n`);
    await progress(rows());
  }
  return { records: rows(), samples, ...(transform ? { table: transform.table.hash } : {}) };
}

/** kdn's plan for retrieved chunks: grouped by document (best hit's document first), in document order within. */
function retrievedPieces(set: HeldOutSet, question: string): { pieces: number[][]; labels: string[] } {
  const search = chunkIndexSearch(set, DEFAULT_SEARCH_TUNING);
  const byDoc = new Map<string, number[]>();
  for (const hit of search(question, TOP_K)) byDoc.set(hit.docId, [...(byDoc.get(hit.docId) ?? []), hit.index]);
  const pieces: number[][] = [];
  const labels: string[] = [];
  for (const [docId, indices] of byDoc) {
    const doc = set.documents.find((d) => d.file === docId)!;
    for (const index of indices.sort((x, y) => x - y)) {
      pieces.push(doc.chunks[index]!.tokenIds);
      labels.push(`${doc.title}#${index}`);
    }
  }
  return { pieces, labels };
}

async function natural(
  engine: Engine,
  sink: number,
  set: HeldOutSet,
  a: AnswersArgs,
): Promise<{ records: BenchRecord[]; samples: string[] }> {
  const byKind = new Map<string, Tally>();
  const samples: string[] = [];
  for (const [i, q] of set.questions.slice(0, a.natural).entries()) {
    const { pieces } = retrievedPieces(set, q.question);
    const run = modeRun(engine, PLAIN_ENCODER, sink, pieces);
    try {
      const prompt = promptIds(engine, q.question);
      const got = await answer(await MODES.recompute.start(run.input, null, prompt), prompt, a.maxNew);
      const kind = set.documents.find((d) => d.file === q.doc)!.kind;
      for (const key of [kind, 'all']) {
        if (!byKind.has(key)) byKind.set(key, new Tally());
        byKind.get(key)!.add('question', got, q.answer, undefined);
      }
      samples.push(`Q: ${q.question} | expected: ${q.answer} | model: ${got}`);
    } finally {
      run.dispose();
    }
    if (!process.env.KDN_TEST) process.stderr.write(`answers: natural ${i + 1}/${Math.min(a.natural, set.questions.length)}\n`);
  }
  const records = [...byKind].map(([kind, t]) => {
    const c = t.columns(['question']);
    return {
      section: 'natural',
      mode: 'recompute',
      codec: `top-${TOP_K} chunks, documents: ${kind}`,
      exact: c.exact_question!,
      f1: c.f1_question!,
      n: c.n_question!,
    };
  });
  return { records, samples };
}

function retrieval(set: HeldOutSet): BenchRecord[] {
  const ks = [1, 4];
  const rows = [measureRecall('previous: minisearch defaults, OR, prefix expansion', set, previousSearch(set), ks)];
  const tunings = [
    DEFAULT_SEARCH_TUNING,
    { prefixMinLength: 0, titleBoost: 0.5 },
    { prefixMinLength: 5, titleBoost: DEFAULT_SEARCH_TUNING.titleBoost },
  ];
  for (const t of tunings) {
    const name = `ChunkIndex: stems, stop-words, options; prefix from ${t.prefixMinLength || 'never'}; title boost ${t.titleBoost}${t === DEFAULT_SEARCH_TUNING ? ' (default)' : ''}`;
    rows.push(measureRecall(name, set, chunkIndexSearch(set, t), ks));
  }
  return rows.map((r) => ({ section: 'retrieval', ...r }));
}

export async function run(args: string[], checkpoint?: Checkpoint): Promise<BenchReport> {
  const a = parse(args);
  const engine = await createEngine({ modelDir: a.model, backend: 'cpu' });
  try {
    const sink = engine.tokenizer.bosTokenId;
    if (sink === undefined)
      throw new KdnError('MODEL_UNSUPPORTED', 'the answers benchmark needs a model with a BOS token', { hint: 'use a Llama-family model' });
    const set = await loadHeldOutSet(a.retrieval, engine.tokenizer, CHUNK_TOKENS);
    const params: BenchRecord = {
      model: a.model,
      fingerprint: engine.info.fingerprint,
      parameters: engine.info.parameters,
      backend: engine.backend,
      chunkTokens: CHUNK_TOKENS,
      topK: TOP_K,
      maxNewTokens: a.maxNew,
      syntheticSet: a.synthetic,
      retrievalSet: `${a.retrieval} (${set.questions.length} questions, ${set.documents.length} documents, ${set.documents.reduce((n, d) => n + d.chunks.length, 0)} chunks)`,
      metrics:
        'exact match and token F1 after SQuAD normalization (lower case, punctuation and articles removed); answers greedy, first line',
    };
    const records: BenchRecord[] = a.sections.includes('retrieval') ? retrieval(set) : [];
    if (a.sections.includes('synthetic')) {
      const done = records.length;
      const s = await synthetic(engine, sink, a, async (rows) => checkpoint?.({ params, records: [...records.slice(0, done), ...rows] }));
      records.push(...s.records);
      params.syntheticSamples = s.samples.join(' || ');
      if (s.table) params.transformTable = `fitted on the shipped calibration text, ${s.table.slice(0, 12)}`;
    }
    if (a.sections.includes('natural')) {
      const n = await natural(engine, sink, set, a);
      records.push(...n.records);
      params.naturalAnswers = n.samples.join(' || ');
    }
    return { params, records };
  } finally {
    await engine.dispose();
  }
}
