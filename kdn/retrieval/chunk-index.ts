import MiniSearch, { type Options, type SearchOptions } from 'minisearch';
import type { Manifest } from '../manifest.ts';
import { termsOf, tokenize } from './analyzer.ts';

/** A chunk found by a search, best first. */
export interface ChunkHit {
  docId: string;
  title: string;
  index: number;
  score: number;
}

/** What the index reads of a document's manifest. */
export type IndexedDocument = Pick<Manifest, 'id' | 'namespace' | 'title'> & { chunks: readonly { index: number; text: string }[] };

interface IndexedChunk {
  id: string;
  docId: string;
  title: string;
  index: number;
  text: string;
}

/** How a search weighs its terms; the defaults are the ones bench/answers.ts measured best. */
export interface SearchTuning {
  /** Question terms at least this long also match longer index terms they start (0: never). */
  prefixMinLength: number;
  /** Weight of a match in the document title against one in the chunk text. */
  titleBoost: number;
}

export const DEFAULT_SEARCH_TUNING: SearchTuning = { prefixMinLength: 0, titleBoost: 2 };

/**
 * BM25 over chunk texts (minisearch's scoring) with the terms of analyzer.ts, any term matching (OR), one index per
 * namespace so a search never sees another namespace's chunks. Built from manifests, so a restart rebuilds it from
 * the origin.
 */
export class ChunkIndex {
  private readonly byNamespace = new Map<string, MiniSearch<IndexedChunk>>();
  private readonly searchOptions: SearchOptions;

  constructor(tuning: SearchTuning = DEFAULT_SEARCH_TUNING) {
    const { prefixMinLength, titleBoost } = tuning;
    this.searchOptions = {
      combineWith: 'OR',
      prefix: (term) => prefixMinLength > 0 && term.length >= prefixMinLength && !term.startsWith('-'),
      boost: { title: titleBoost },
    };
  }

  add(manifest: IndexedDocument): void {
    const index = this.namespaceIndex(manifest.namespace);
    for (const chunk of manifest.chunks) {
      const id = `${manifest.id}:${chunk.index}`;
      if (index.has(id)) continue;
      index.add({ id, docId: manifest.id, title: manifest.title, index: chunk.index, text: chunk.text });
    }
  }

  remove(manifest: IndexedDocument): void {
    const index = this.byNamespace.get(manifest.namespace);
    if (!index) return;
    for (const chunk of manifest.chunks) {
      const id = `${manifest.id}:${chunk.index}`;
      if (index.has(id)) index.discard(id);
    }
  }

  search(namespace: string, query: string, topK: number): ChunkHit[] {
    const index = this.byNamespace.get(namespace);
    if (!index) return [];
    return index
      .search(query, this.searchOptions)
      .slice(0, topK)
      .map((hit) => ({ docId: hit.docId as string, title: hit.title as string, index: hit.index as number, score: hit.score }));
  }

  private namespaceIndex(namespace: string): MiniSearch<IndexedChunk> {
    let index = this.byNamespace.get(namespace);
    if (!index) {
      const options: Options<IndexedChunk> = {
        fields: ['text', 'title'],
        storeFields: ['docId', 'title', 'index'],
        tokenize,
        processTerm: termsOf,
      };
      index = new MiniSearch<IndexedChunk>(options);
      this.byNamespace.set(namespace, index);
    }
    return index;
  }
}
