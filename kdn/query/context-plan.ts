import { KdnError } from '../../common/errors.ts';
import type { Catalog } from '../catalog.ts';
import type { Manifest, ManifestChunk } from '../manifest.ts';

/** A chunk's object under one codec. */
export interface PieceObject {
  /** As codecFromString reads it. */
  codec: string;
  key: string;
  bytes: number;
}

/** One chunk placed in a query's context, with the KV object that holds it. */
export interface ContextPiece {
  docId: string;
  title: string;
  index: number;
  /** Retrieval score; null when the document was named. */
  score: number | null;
  tokenIds: number[];
  kind: 'chained' | 'independent';
  /** The object used: the main codec's unless a level was picked (kdn/query/level-policy.ts). */
  codec: string;
  key: string;
  bytes: number;
  /** The same object at the extra levels stored beside the main codec (config `codecLevels`). */
  levels: PieceObject[];
}

export const MAX_DOCUMENTS_PER_QUERY = 32;
export const MAX_TOP_K = 32;

/** The named documents' manifests, in the order named. */
export async function resolveDocuments(catalog: Catalog, namespace: string, documents: string[]): Promise<Manifest[]> {
  const manifests: Manifest[] = [];
  for (const name of documents) manifests.push(await catalog.resolve(namespace, name));
  return manifests;
}

/**
 * Named documents: all of their chunks in document order, using each document's prefix-chained objects, which are
 * exact when the document is read in its own order. Chunks past the chain's end use their independent object.
 */
export function planFromDocuments(manifests: Manifest[]): ContextPiece[] {
  return manifests.flatMap((m) => m.chunks.map((chunk) => pieceOf(m, chunk, chunk.chained ? 'chained' : 'independent', null)));
}

/**
 * Retrieval: the top-k chunks by BM25, grouped by document (the document with the best hit first) and in document
 * order within each, so the model reads text in its own order. A document's hits that run from its first chunk
 * without a gap use their prefix-chained objects, whose attention across those chunks is exact; every other hit
 * uses its independent object, re-rotated to its position.
 */
export async function planFromRetrieval(catalog: Catalog, namespace: string, query: string, topK: number): Promise<ContextPiece[]> {
  const hits: Hit[] = [];
  for (const hit of catalog.index.search(namespace, query, topK)) {
    const manifest = await catalog.find(namespace, hit.docId);
    if (manifest?.chunks[hit.index]) hits.push({ manifest, index: hit.index, score: hit.score });
  }
  return piecesFromHits(hits);
}

/**
 * Named documents too long for the model's window: as many of their chunks as fit in `budget` tokens, those that
 * match `query` best first, then the others in document order, placed like retrieval hits (planFromRetrieval).
 */
export function planWithinBudget(catalog: Catalog, manifests: Manifest[], query: string, budget: number): ContextPiece[] {
  const byId = new Map(manifests.map((m) => [m.id, m]));
  const namespace = manifests[0]?.namespace;
  const ranked: Hit[] = [];
  const seen = new Set<string>();
  for (const hit of namespace === undefined ? [] : catalog.index.search(namespace, query, Infinity)) {
    const manifest = byId.get(hit.docId);
    if (!manifest?.chunks[hit.index]) continue;
    ranked.push({ manifest, index: hit.index, score: hit.score });
    seen.add(`${manifest.id}:${hit.index}`);
  }
  for (const m of manifests)
    for (const chunk of m.chunks) if (!seen.has(`${m.id}:${chunk.index}`)) ranked.push({ manifest: m, index: chunk.index, score: 0 });
  const picked: Hit[] = [];
  let used = 0;
  for (const hit of ranked) {
    const tokens = hit.manifest.chunks[hit.index]!.tokenIds.length;
    if (used + tokens > budget) continue;
    picked.push(hit);
    used += tokens;
  }
  return piecesFromHits(picked);
}

interface Hit {
  manifest: Manifest;
  index: number;
  score: number;
}

/** Hits in best-first order, grouped by document and read in document order (see planFromRetrieval). */
function piecesFromHits(hits: Hit[]): ContextPiece[] {
  const byDocument = new Map<string, { manifest: Manifest; hits: Hit[] }>();
  for (const hit of hits) {
    const entry = byDocument.get(hit.manifest.id) ?? { manifest: hit.manifest, hits: [] };
    entry.hits.push(hit);
    byDocument.set(hit.manifest.id, entry);
  }
  const pieces: ContextPiece[] = [];
  for (const { manifest, hits: own } of byDocument.values()) {
    own.sort((a, b) => a.index - b.index);
    own.forEach((hit, position) => {
      const chunk = manifest.chunks[hit.index]!;
      pieces.push(pieceOf(manifest, chunk, hit.index === position && chunk.chained ? 'chained' : 'independent', hit.score));
    });
  }
  return pieces;
}

/** A chunk's piece using its object of `kind` under the main codec, with that object at every stored level. */
function pieceOf(manifest: Manifest, chunk: ManifestChunk, kind: ContextPiece['kind'], score: number | null): ContextPiece {
  const object = kind === 'chained' ? chunk.chained! : chunk.independent;
  const levels = (chunk.levels ?? []).flatMap((level) => {
    const ref = kind === 'chained' ? level.chained : level.independent;
    return ref ? [{ codec: level.codec, key: ref.key, bytes: ref.bytes }] : [];
  });
  return {
    docId: manifest.id,
    title: manifest.title,
    index: chunk.index,
    score,
    tokenIds: chunk.tokenIds,
    kind,
    codec: manifest.codec,
    key: object.key,
    bytes: object.bytes,
    levels,
  };
}

/** Rejects a context that cannot fit the model before any work is done. */
export function checkContextFits(contextTokens: number, promptTokens: number, maxTokens: number, maxPositions: number): void {
  const needed = 1 + contextTokens + promptTokens + maxTokens;
  if (needed > maxPositions) {
    throw new KdnError('CONTEXT_TOO_LONG', `the query needs ${needed} positions; the model has ${maxPositions}`, {
      hint: 'name fewer documents, lower topK, or ask for fewer maxTokens',
      details: { contextTokens, promptTokens, maxTokens, maxPositions },
    });
  }
}
