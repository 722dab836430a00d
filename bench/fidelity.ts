/**
 * What each KV codec and composition mode costs in answer quality, against full recompute of the same prompt
 * ([BOS] + document + prompt), on the demo model with held-out documents (bench/data/heldout/) and continuation
 * prompts about them (bench/data/questions.json).
 *
 * The document's KV is cut into --chunk-token chunks and taken through the real path (exportKV -> encodeKVObject ->
 * bytes -> readKVObject -> injectKV) after a freshly prefilled BOS, then the prompt is prefilled and answered:
 *   prefix-chained: chunk i computed after chunks 0..i-1 (exported from the recompute session itself);
 *   independent: each chunk computed alone after a BOS (positionBase 1), placed at its position by re-rotation.
 * Per (codec, mode), over every answer position (the recompute's greedy answer of --answer tokens, teacher-forced):
 * top-1 agreement with recompute, mean KL(recompute || inject); per prompt: exact match of the free-running greedy
 * answer; and the stored bytes per token.
 *
 *   npm run bench -- fidelity [--model models/kdn-demo] [--backend cpu] [--chunk 128] [--answer 32]
 */
import { join, resolve } from 'node:path';
import { KdnError } from '../common/errors.ts';
import { createEngine, type Engine, type Session } from '../engine-adapter/index.ts';
import { codecFromString, encodeKVObject, readKVObject } from '../storage/kv-object/index.ts';
import type { KVTensors } from '../storage/kv-object/types.ts';
import { greedyAnswer, teacherForced, type GreedyAnswer } from './lib/answer.ts';
import { choice, choiceList, parseFlags, positiveInt } from './lib/args.ts';
import { byteStream } from './lib/byte-stream.ts';
import { loadDocuments, type FidelityDocument } from './lib/fidelity-data.ts';
import { argmax, klDivergence } from './lib/logits.ts';
import { DEFAULT_DEMO_MODEL } from './lib/shapes.ts';
import { round } from './lib/stats.ts';
import type { BenchRecord, BenchReport } from './report.ts';

const CODECS = ['fp16', 'fp16+lz4', 'int8', 'int8+lz4', 'int4', 'int4+lz4'] as const;
const MODES = ['prefix-chained', 'independent'] as const;
type Mode = (typeof MODES)[number];

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
  questions: string;
  heldout: string;
}

function parse(args: string[]): FidelityArgs {
  const values = parseFlags(args, {
    model: { type: 'string' }, backend: { type: 'string' }, chunk: { type: 'string' }, answer: { type: 'string' },
    'max-doc-tokens': { type: 'string' }, docs: { type: 'string' }, prompts: { type: 'string' }, codecs: { type: 'string' },
    modes: { type: 'string' }, questions: { type: 'string' }, heldout: { type: 'string' },
  });
  return {
    model: resolve(values.model ?? DEFAULT_DEMO_MODEL),
    backend: choice(values.backend, 'cpu', ['auto', 'webgpu', 'cpu'] as const, 'backend'),
    chunk: positiveInt(values.chunk, 128, 'chunk'),
    answer: positiveInt(values.answer, 32, 'answer'),
    maxDocTokens: positiveInt(values['max-doc-tokens'], 1024, 'max-doc-tokens'),
    docs: positiveInt(values.docs, Infinity, 'docs'),
    prompts: positiveInt(values.prompts, Infinity, 'prompts'),
    codecs: choiceList(values.codecs, CODECS, CODECS, 'codecs'),
    modes: choiceList(values.modes, MODES, MODES, 'modes'),
    questions: resolve(values.questions ?? join(BENCH_DIR, 'data', 'questions.json')),
    heldout: resolve(values.heldout ?? join(BENCH_DIR, 'data', 'heldout')),
  };
}

/** A document's chunk: its token ids and its KV as exported by the engine. */
interface Chunk {
  ids: number[];
  kv: KVTensors;
}

/** Chunk ranges of a document that sits at positions 1.. (after BOS). */
function ranges(docTokens: number, chunk: number): { start: number; end: number }[] {
  const out = [];
  for (let s = 0; s < docTokens; s += chunk) out.push({ start: s, end: Math.min(s + chunk, docTokens) });
  return out;
}

/** prefix-chained: exported from the session that prefilled [BOS] + the whole document. */
async function prefixChainedChunks(reference: Session, doc: number[], chunk: number): Promise<Chunk[]> {
  const out: Chunk[] = [];
  for (const r of ranges(doc.length, chunk)) out.push({ ids: doc.slice(r.start, r.end), kv: await reference.exportKV({ start: 1 + r.start, end: 1 + r.end }) });
  return out;
}

/** independent: each chunk prefilled alone after a BOS, so its KV has positionBase 1 and sees no other chunk. */
async function independentChunks(engine: Engine, bos: number, doc: number[], chunk: number): Promise<Chunk[]> {
  const out: Chunk[] = [];
  for (const r of ranges(doc.length, chunk)) {
    const ids = doc.slice(r.start, r.end);
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

/** Totals of one (codec, mode) over all documents and prompts. */
interface Tally {
  positions: number;
  agree: number;
  klSum: number;
  prompts: number;
  exact: number;
  bytes: number;
  tokens: number;
}

/** Scores one prompt answered from `session` (holding [BOS] + document) against the recompute's answer. */
async function score(session: Session, contextLength: number, prompt: number[], reference: GreedyAnswer, vocab: number, tally: Tally): Promise<void> {
  session.truncate(contextLength);
  const free = await greedyAnswer(session, prompt, reference.tokens.length);
  session.truncate(contextLength + prompt.length);
  const rows = await teacherForced(session, free.logits[0]!, reference.tokens, vocab);
  rows.forEach((row, j) => {
    tally.positions++;
    if (argmax(row) === reference.tokens[j]) tally.agree++;
    tally.klSum += klDivergence(reference.logits[j]!, 0, row, 0, vocab);
  });
  tally.prompts++;
  if (free.tokens.every((t, j) => t === reference.tokens[j])) tally.exact++;
}

export async function run(args: string[]): Promise<BenchReport> {
  const a = parse(args);
  const engine = await createEngine({ modelDir: a.model, backend: a.backend });
  try {
    const { tokenizer } = engine;
    const bos = tokenizer.bosTokenId;
    if (bos === undefined) throw new KdnError('MODEL_UNSUPPORTED', 'the fidelity benchmark needs a model with a BOS token', { hint: 'use a Llama-family model' });
    const vocab = engine.info.vocabSize;
    const docs: FidelityDocument[] = await loadDocuments(a.questions, a.heldout, a.docs, a.prompts);
    const capacity = Math.min(engine.info.maxPositionEmbeddings, 8192);
    const tallies = new Map<string, Tally>();
    const tally = (codec: string, mode: Mode): Tally => {
      const key = `${codec}|${mode}`;
      if (!tallies.has(key)) tallies.set(key, { positions: 0, agree: 0, klSum: 0, prompts: 0, exact: 0, bytes: 0, tokens: 0 });
      return tallies.get(key)!;
    };
    const documentSet: string[] = [];

    for (const d of docs) {
      const prompts = d.prompts.map((p) => tokenizer.encode(p, { addSpecialTokens: false }));
      const longest = Math.max(...prompts.map((p) => p.length));
      const room = capacity - 1 - longest - a.answer;
      if (room < 1) throw new KdnError('CONTEXT_TOO_LONG', `prompts of ${longest} tokens and ${a.answer}-token answers leave no room for a document`);
      const doc = tokenizer.encode(d.text, { addSpecialTokens: false }).slice(0, Math.min(a.maxDocTokens, room));
      const contextLength = 1 + doc.length;
      documentSet.push(`${d.file} (${doc.length} tokens, ${prompts.length} prompts)`);
      if (!process.env.KDN_TEST) process.stderr.write(`fidelity: ${d.file}: ${doc.length} tokens, ${prompts.length} prompts\n`);

      const reference = engine.createSession({ capacity });
      try {
        await reference.prefill([bos, ...doc], { logits: 'none' });
        const answers: GreedyAnswer[] = [];
        for (const p of prompts) {
          reference.truncate(contextLength);
          answers.push(await greedyAnswer(reference, p, a.answer));
        }
        reference.truncate(contextLength);
        for (const mode of a.modes) {
          const chunks = mode === 'prefix-chained' ? await prefixChainedChunks(reference, doc, a.chunk) : await independentChunks(engine, bos, doc, a.chunk);
          for (const codec of a.codecs) {
            const t = tally(codec, mode);
            const objects = chunks.map((c) => encodeKVObject(c.kv, { modelFingerprint: engine.info.fingerprint, tokenIds: c.ids, codec: codecFromString(codec) }));
            t.bytes += objects.reduce((sum, o) => sum + o.length, 0);
            t.tokens += doc.length;
            const session = engine.createSession({ capacity });
            try {
              await session.prefill([bos], { logits: 'none' });
              for (const bytes of objects) await session.injectKV(await readKVObject(byteStream(bytes)), session.length);
              for (const [i, p] of prompts.entries()) await score(session, contextLength, p, answers[i]!, vocab, t);
            } finally {
              session.dispose();
            }
          }
        }
      } finally {
        reference.dispose();
      }
    }

    const fp16BytesPerToken = engine.info.kvBytesPerToken;
    const records: BenchRecord[] = [];
    for (const mode of a.modes) {
      for (const codec of a.codecs) {
        const t = tally(codec, mode);
        const bytesPerToken = t.bytes / t.tokens;
        records.push({
          codec,
          mode,
          top1_agreement: round(t.agree / t.positions),
          mean_kl: round(t.klSum / t.positions, 3),
          exact_match: round(t.exact / t.prompts),
          bytes_per_token: round(bytesPerToken, 5),
          vs_fp16_raw: round(bytesPerToken / fp16BytesPerToken, 3),
          positions: t.positions,
          prompts: t.prompts,
        });
      }
    }
    return {
      params: {
        model: a.model,
        fingerprint: engine.info.fingerprint,
        parameters: engine.info.parameters,
        backend: engine.backend,
        device: engine.device,
        documents: documentSet.join('; '),
        questions: a.questions,
        chunkTokens: a.chunk,
        answerTokens: a.answer,
        fp16KvBytesPerToken: fp16BytesPerToken,
        method:
          'reference: [BOS]+document+prompt prefilled, greedy answer of answerTokens (no stop token); inject: [BOS] prefilled, ' +
          'document chunks injected from encoded KV objects, same prompt; top1_agreement and mean_kl (nats, KL(recompute||inject)) ' +
          'over answer positions teacher-forced on the reference answer; exact_match: free-running greedy answer equal to the reference',
      },
      records,
    };
  } finally {
    await engine.dispose();
  }
}
