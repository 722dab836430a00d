import { KdnError } from '../../common/errors.ts';
import type { Catalog } from '../catalog.ts';
import type { Manifest } from '../manifest.ts';

/** One chunk placed in a query's context, with the KV object that holds it. */
export interface ContextPiece {
  docId: string;
  title: string;
  index: number;
  /** Retrieval score; null when the document was named. */
  score: number | null;
  tokenIds: number[];
  kind: 'chained' | 'independent';
  key: string;
  bytes: number;
}

export const MAX_DOCUMENTS_PER_QUERY = 32;
export const MAX_TOP_K = 32;

/**
 * Named documents: all of their chunks in document order, using each document's prefix-chained objects, which are
 * exact when the document is read in its own order. Chunks past the chain's end use their independent object.
 */
export async function planFromDocuments(catalog: Catalog, namespace: string, documents: string[]): Promise<ContextPiece[]> {
  const manifests: Manifest[] = [];
  for (const name of documents) manifests.push(await catalog.resolve(namespace, name));
  return manifests.flatMap((m) =>
    m.chunks.map((chunk) => {
      const object = chunk.chained ?? chunk.independent;
      return {
        docId: m.id,
        title: m.title,
        index: chunk.index,
        score: null,
        tokenIds: chunk.tokenIds,
        kind: chunk.chained ? ('chained' as const) : ('independent' as const),
        key: object.key,
        bytes: object.bytes,
      };
    }),
  );
}

/**
 * Retrieval: the top-k chunks by BM25, grouped by document (the document with the best hit first) and in document
 * order within each, so the model reads text in its own order. A document's hits that run from its first chunk
 * without a gap use their prefix-chained objects, whose attention across those chunks is exact; every other hit
 * uses its independent object, re-rotated to its position.
 */
export async function planFromRetrieval(catalog: Catalog, namespace: string, query: string, topK: number): Promise<ContextPiece[]> {
  const byDocument = new Map<string, { manifest: Manifest; hits: { index: number; score: number }[] }>();
  for (const hit of catalog.index.search(namespace, query, topK)) {
    const manifest = await catalog.find(namespace, hit.docId);
    if (!manifest?.chunks[hit.index]) continue;
    const entry = byDocument.get(manifest.id) ?? { manifest, hits: [] };
    entry.hits.push({ index: hit.index, score: hit.score });
    byDocument.set(manifest.id, entry);
  }
  const pieces: ContextPiece[] = [];
  for (const { manifest, hits } of byDocument.values()) {
    hits.sort((a, b) => a.index - b.index);
    hits.forEach((hit, position) => {
      const chunk = manifest.chunks[hit.index]!;
      const object = hit.index === position && chunk.chained ? chunk.chained : null;
      pieces.push({
        docId: manifest.id,
        title: manifest.title,
        index: chunk.index,
        score: hit.score,
        tokenIds: chunk.tokenIds,
        kind: object ? 'chained' : 'independent',
        key: (object ?? chunk.independent).key,
        bytes: (object ?? chunk.independent).bytes,
      });
    });
  }
  return pieces;
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
