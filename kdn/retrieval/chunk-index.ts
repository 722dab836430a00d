import MiniSearch from 'minisearch';
import type { Manifest } from '../manifest.ts';

/** A chunk found by a search, best first. */
export interface ChunkHit {
  docId: string;
  title: string;
  index: number;
  score: number;
}

interface IndexedChunk {
  id: string;
  docId: string;
  title: string;
  index: number;
  text: string;
}

/**
 * BM25 over chunk texts (minisearch's scoring), one index per namespace so a search never sees another
 * namespace's chunks. Built from manifests, so a restart rebuilds it from the origin.
 */
export class ChunkIndex {
  private readonly byNamespace = new Map<string, MiniSearch<IndexedChunk>>();

  add(manifest: Manifest): void {
    const index = this.namespaceIndex(manifest.namespace);
    for (const chunk of manifest.chunks) {
      const id = `${manifest.id}:${chunk.index}`;
      if (index.has(id)) continue;
      index.add({ id, docId: manifest.id, title: manifest.title, index: chunk.index, text: chunk.text });
    }
  }

  remove(manifest: Manifest): void {
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
      .search(query, { combineWith: 'OR', prefix: true, boost: { title: 0.5 } })
      .slice(0, topK)
      .map((hit) => ({ docId: hit.docId as string, title: hit.title as string, index: hit.index as number, score: hit.score }));
  }

  private namespaceIndex(namespace: string): MiniSearch<IndexedChunk> {
    let index = this.byNamespace.get(namespace);
    if (!index) {
      index = new MiniSearch<IndexedChunk>({ fields: ['text', 'title'], storeFields: ['docId', 'title', 'index'] });
      this.byNamespace.set(namespace, index);
    }
    return index;
  }
}
