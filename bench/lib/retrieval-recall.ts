/**
 * Recall@k of chunk retrieval on the held-out set: the share of questions whose top-k chunks include a chunk
 * holding the answer's evidence. Compares kdn's ChunkIndex (with tunings) against the configuration it replaced.
 */
import MiniSearch from 'minisearch';
import { ChunkIndex, type ChunkHit, type SearchTuning } from '../../kdn/retrieval/chunk-index.ts';
import { evidenceChunks, type HeldOutSet } from './retrieval-set.ts';

const NAMESPACE = 'heldout';

type Search = (question: string, topK: number) => ChunkHit[];

export interface RecallRow {
  retrieval: string;
  [key: `recall_at_${number}`]: number;
  mrr_at_10: number;
  questions: number;
  misses_at_4: string;
}

/** kdn's index with a given tuning, holding every document of the set in one namespace. */
export function chunkIndexSearch(set: HeldOutSet, tuning: SearchTuning): Search {
  const index = new ChunkIndex(tuning);
  for (const d of set.documents) index.add({ id: d.file, namespace: NAMESPACE, title: d.title, chunks: d.chunks });
  return (question, topK) => index.search(NAMESPACE, question, topK);
}

/** The configuration ChunkIndex had before its own analysis: minisearch defaults, OR, prefix expansion of every term. */
export function previousSearch(set: HeldOutSet): Search {
  const index = new MiniSearch<{ id: string; docId: string; title: string; index: number; text: string }>({
    fields: ['text', 'title'],
    storeFields: ['docId', 'title', 'index'],
  });
  for (const d of set.documents) {
    for (const c of d.chunks) index.add({ id: `${d.file}:${c.index}`, docId: d.file, title: d.title, index: c.index, text: c.text });
  }
  return (question, topK) =>
    index
      .search(question, { combineWith: 'OR', prefix: true, boost: { title: 0.5 } })
      .slice(0, topK)
      .map((h) => ({ docId: h.docId as string, title: h.title as string, index: h.index as number, score: h.score }));
}

export function measureRecall(name: string, set: HeldOutSet, search: Search, ks: number[]): RecallRow {
  const hitsAt = new Map(ks.map((k) => [k, 0]));
  let reciprocal = 0;
  const misses: string[] = [];
  for (const q of set.questions) {
    const doc = set.documents.find((d) => d.file === q.doc)!;
    const wanted = new Set(evidenceChunks(doc, q.evidence));
    const ranked = search(q.question, Math.max(10, ...ks));
    const rank = ranked.findIndex((h) => h.docId === doc.file && wanted.has(h.index));
    for (const k of ks) if (rank >= 0 && rank < k) hitsAt.set(k, hitsAt.get(k)! + 1);
    if (rank >= 0 && rank < 10) reciprocal += 1 / (rank + 1);
    if (rank < 0 || rank >= 4) misses.push(q.question);
  }
  const n = set.questions.length;
  const row: RecallRow = { retrieval: name, mrr_at_10: round3(reciprocal / n), questions: n, misses_at_4: misses.join(' | ') };
  for (const k of ks) row[`recall_at_${k}`] = round3(hitsAt.get(k)! / n);
  return row;
}

function round3(x: number): number {
  return Math.round(x * 1000) / 1000;
}
