import { z } from 'zod';

/** One stored chunk KV object. */
const ObjectRefSchema = z.object({ key: z.string().min(1), bytes: z.number().int().min(0) });

/** A chunk's two objects under one codec. */
const ChunkObjectsSchema = z.object({
  /** Computed alone after BOS (positions 1..). */
  independent: ObjectRefSchema,
  /** Computed after BOS and the document's earlier chunks; null past the model's context length. */
  chained: ObjectRefSchema.nullable(),
});

/** One extra quality level of a chunk: the same tokens' objects under another codec (config `codecLevels`). */
const ChunkLevelSchema = z.object({
  /** As codecFromString reads it, e.g. "transform:x16". */
  codec: z.string().min(1),
  ...ChunkObjectsSchema.shape,
});

const ManifestChunkSchema = z.object({
  index: z.number().int().min(0),
  tokenIds: z.array(z.number().int().min(0)),
  text: z.string(),
  ...ChunkObjectsSchema.shape,
  /** Objects of the extra levels, stored beside the main codec's; absent in manifests written without levels. */
  levels: z.array(ChunkLevelSchema).optional(),
});

/**
 * A document's manifest, stored at the origin under manifests/<namespace>/<id>.json after all of its chunk
 * objects: a manifest's presence means the document is complete, for this kdn and any other on the same origin.
 */
export const ManifestSchema = z.object({
  version: z.literal(1),
  id: z.string().regex(/^[0-9a-f]{32}$/),
  namespace: z.string().min(1),
  title: z.string(),
  /**
   * The tenant whose upload made it, whose quota it counts against (also in a shared namespace, which has no tenant);
   * absent in manifests written before it was recorded, which count against their namespace's tenant.
   */
  uploadedBy: z.string().min(1).optional(),
  createdAt: z.string(),
  modelFingerprint: z.string().min(1),
  /** Codec as codecFromString reads it, e.g. "int8". */
  codec: z.string().min(1),
  chunkBudget: z.number().int().min(1),
  tokens: z.number().int().min(0),
  bytes: z.number().int().min(0),
  chunks: z.array(ManifestChunkSchema),
});

export type Manifest = z.infer<typeof ManifestSchema>;
export type ManifestChunk = z.infer<typeof ManifestChunkSchema>;
export type ObjectRef = z.infer<typeof ObjectRefSchema>;
export type ChunkObjects = z.infer<typeof ChunkObjectsSchema>;

/** Every distinct chunk object a manifest references (a chain's first object is its first independent one). */
export function manifestObjects(manifest: Manifest): ObjectRef[] {
  const byKey = new Map<string, ObjectRef>();
  for (const chunk of manifest.chunks) {
    for (const objects of [chunk, ...(chunk.levels ?? [])]) {
      byKey.set(objects.independent.key, objects.independent);
      if (objects.chained) byKey.set(objects.chained.key, objects.chained);
    }
  }
  return [...byKey.values()];
}

/** The manifest without token ids and texts, for listings. */
export interface DocumentSummary {
  id: string;
  namespace: string;
  title: string;
  createdAt: string;
  codec: string;
  tokens: number;
  chunks: number;
  bytes: number;
}

export function summarize(manifest: Manifest): DocumentSummary {
  const { id, namespace, title, createdAt, codec, tokens, bytes } = manifest;
  return { id, namespace, title, createdAt, codec, tokens, chunks: manifest.chunks.length, bytes };
}
