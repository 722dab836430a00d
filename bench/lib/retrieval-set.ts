/**
 * The held-out question set of bench/data/retrieval/questions.json: documents of several kinds uploaded into one
 * namespace, chunked exactly as ingest chunks them, and natural questions whose answering passage is known.
 */
import { readFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { z } from 'zod';
import { KdnError } from '../../common/errors.ts';
import type { Tokenizer } from '../../engine-adapter/index.ts';
import { chunkTokens, type Chunk } from '../../kdn/ingest/chunker.ts';

const setSchema = z.object({
  documents: z.array(z.object({ file: z.string().min(1), kind: z.string(), source: z.string(), license: z.string() })).min(1),
  questions: z
    .array(z.object({ doc: z.string().min(1), question: z.string().min(1), answer: z.string().min(1), evidence: z.string().min(1) }))
    .min(1),
});

export type HeldOutQuestion = z.infer<typeof setSchema>['questions'][number];

export interface HeldOutDocument {
  /** The file as the set names it; also the document's title, as an upload of that file would have. */
  file: string;
  title: string;
  kind: string;
  text: string;
  tokenIds: number[];
  chunks: Chunk[];
}

export interface HeldOutSet {
  documents: HeldOutDocument[];
  questions: HeldOutQuestion[];
}

/** Whitespace-insensitive, so a phrase matches across the line breaks of a rendered manual page. */
export function normalizeSpace(text: string): string {
  return text.replace(/\s+/g, ' ').trim();
}

export async function loadHeldOutSet(path: string, tokenizer: Tokenizer, chunkBudget: number): Promise<HeldOutSet> {
  let parsed: z.infer<typeof setSchema>;
  try {
    parsed = setSchema.parse(JSON.parse(await readFile(path, 'utf8')));
  } catch (err) {
    throw new KdnError('INVALID_ARGUMENT', `cannot use ${path}: ${(err as Error).message}`, {
      hint: 'it must be {"documents": [{file, kind, source, license}], "questions": [{doc, question, answer, evidence}]}',
    });
  }
  const documents: HeldOutDocument[] = [];
  for (const d of parsed.documents) {
    const text = await readFile(join(dirname(path), d.file), 'utf8');
    const tokenIds = tokenizer.encode(text, { addSpecialTokens: false });
    const title = d.file.split('/').at(-1)!;
    documents.push({ file: d.file, title, kind: d.kind, text, tokenIds, chunks: chunkTokens(tokenizer, tokenIds, chunkBudget) });
  }
  for (const q of parsed.questions) {
    const doc = documents.find((d) => d.file === q.doc);
    if (!doc) throw new KdnError('INVALID_ARGUMENT', `question "${q.question}" names ${q.doc}, which the set does not list`);
    if (!normalizeSpace(doc.text).includes(normalizeSpace(q.evidence))) {
      throw new KdnError('INVALID_ARGUMENT', `the evidence of "${q.question}" is not in ${q.doc}`, {
        hint: 'copy the phrase from the document',
      });
    }
  }
  return { documents, questions: parsed.questions };
}

/** Indices of a document's chunks that hold a question's evidence (one, or two where a chunk cut splits it). */
export function evidenceChunks(doc: HeldOutDocument, evidence: string): number[] {
  const target = normalizeSpace(evidence);
  const whole = doc.chunks.filter((c) => normalizeSpace(c.text).includes(target)).map((c) => c.index);
  if (whole.length > 0) return whole;
  for (let i = 0; i + 1 < doc.chunks.length; i++) {
    if (normalizeSpace(doc.chunks[i]!.text + doc.chunks[i + 1]!.text).includes(target)) return [i, i + 1];
  }
  return [];
}
