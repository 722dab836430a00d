import { isKdnError } from '../../common/errors.ts';
import type { Logger } from '../../common/log.ts';
import type { EdgeClient } from '../../edge/client/client.ts';
import type { Engine } from '../../engine-adapter/types.ts';
import type { ObjectStore } from '../../storage/object-store.ts';
import { codecToString, type EncodeMeta } from '../../storage/kv-object/index.ts';
import type { CodecSpec, KVTensors } from '../../storage/kv-object/types.ts';
import type { Catalog } from '../catalog.ts';
import { chainedKey, independentKey, type KeyScope } from '../keys.ts';
import type { Manifest, ObjectRef } from '../manifest.ts';
import type { TokenizedDocument } from './ingest-thread.ts';
import { computeChainedKV, computeIndependentKV, type ChunkPlan, type EngineTurn } from './compute-kv.ts';

export interface IngestContext {
  engine: Engine;
  origin: ObjectStore;
  edges: EdgeClient;
  catalog: Catalog;
  codec: CodecSpec;
  chunkBudget: number;
  log: Logger;
  /** Every use of the engine goes through this, one chunk at a time (kdn/scheduler). */
  turn: EngineTurn;
  /** Tokenizes and chunks the document (off the event loop: ingest-thread.ts). */
  tokenize: (text: string, budget: number) => Promise<TokenizedDocument>;
  /** encodeKVObject (off the event loop: ingest-thread.ts); it may take the tensors' arrays. */
  encode: (tensors: KVTensors, meta: EncodeMeta) => Promise<Buffer>;
}

export interface DocumentInput {
  id: string;
  namespace: string;
  title: string;
  text: string;
  salt: string;
  /** The text tokenized and chunked, when the caller already did (an upload is, for its bounds: kdn/services/upload-admission.ts). */
  tokenized?: TokenizedDocument;
}

/** Live progress of one ingest, read by GET /v1/jobs/<id>. */
export interface IngestProgress {
  chunks: number;
  objects: { total: number; done: number; computed: number; skipped: number };
  /** Bytes of chunk objects written (computed) or found (skipped). */
  bytes: number;
}

export function emptyProgress(): IngestProgress {
  return { chunks: 0, objects: { total: 0, done: 0, computed: 0, skipped: 0 }, bytes: 0 };
}

/** Checks for finished objects at a time, so a re-run HEADs many keys quickly without flooding the origin. */
const HEAD_CONCURRENCY = 16;

/**
 * Tokenizes a document once, chunks it, computes the chunk KV objects the origin does not have yet (both kinds),
 * stores each at the origin and pushes it to its edge, and publishes the manifest last. Engine work goes through
 * `ctx.turn` one chunk at a time; `signal` stops the job before its manifest.
 */
export async function ingestDocument(
  ctx: IngestContext,
  doc: DocumentInput,
  progress: IngestProgress,
  signal?: AbortSignal,
): Promise<Manifest> {
  const { engine } = ctx;
  const { tokenIds, chunks } = doc.tokenized ?? (await ctx.tokenize(doc.text, ctx.chunkBudget));
  signal?.throwIfAborted();
  const scope: KeyScope = { modelFingerprint: engine.info.fingerprint, codec: ctx.codec, salt: doc.salt };
  const plans = planKeys(
    scope,
    chunks.map((c) => c.tokenIds),
    engine.info.maxPositionEmbeddings,
  );
  const keys = [...new Set(plans.flatMap((p) => (p.chainedKey ? [p.independentKey, p.chainedKey] : [p.independentKey])))];
  progress.chunks = chunks.length;
  progress.objects.total = keys.length;

  const sizes = new Map<string, number>();
  await forEachLimited(keys, HEAD_CONCURRENCY, async (key) => {
    const info = await ctx.origin.head(key);
    if (!info) return;
    sizes.set(key, info.size);
    progress.objects.done++;
    progress.objects.skipped++;
    progress.bytes += info.size;
  });

  const pending = new Set(keys.filter((key) => !sizes.has(key)));
  const sink = {
    pending,
    save: async (key: string, tensors: KVTensors, ids: number[]): Promise<void> => {
      const bytes = await ctx.encode(tensors, { modelFingerprint: engine.info.fingerprint, tokenIds: ids, codec: ctx.codec });
      await store(ctx, key, bytes);
      pending.delete(key);
      sizes.set(key, bytes.length);
      progress.objects.done++;
      progress.objects.computed++;
      progress.bytes += bytes.length;
    },
  };
  await computeChainedKV(engine, plans, sink, ctx.turn);
  await computeIndependentKV(engine, plans, sink, ctx.turn);
  // A job cancelled during its last object's store does not publish its manifest.
  signal?.throwIfAborted();

  const ref = (key: string): ObjectRef => ({ key, bytes: sizes.get(key)! });
  const manifest: Manifest = {
    version: 1,
    id: doc.id,
    namespace: doc.namespace,
    title: doc.title,
    createdAt: new Date().toISOString(),
    modelFingerprint: engine.info.fingerprint,
    codec: codecToString(ctx.codec),
    chunkBudget: ctx.chunkBudget,
    tokens: tokenIds.length,
    bytes: [...sizes.values()].reduce((a, b) => a + b, 0),
    chunks: chunks.map((chunk, i) => ({
      index: chunk.index,
      tokenIds: chunk.tokenIds,
      text: chunk.text,
      independent: ref(plans[i]!.independentKey),
      chained: plans[i]!.chainedKey ? ref(plans[i]!.chainedKey!) : null,
    })),
  };
  await ctx.catalog.publish(manifest);
  return manifest;
}

/** Keys for each chunk; the chain stops where [sink] + chain would pass the model's context length. */
export function planKeys(scope: KeyScope, chunkTokenIds: number[][], maxPositions: number): ChunkPlan[] {
  let previous: string | null = null;
  let length = 1;
  return chunkTokenIds.map((ids, index) => {
    length += ids.length;
    const inChain = length <= maxPositions;
    const chained = inChain ? chainedKey(scope, previous, ids) : null;
    previous = chained;
    return { index, tokenIds: ids, independentKey: independentKey(scope, ids), chainedKey: chained };
  });
}

/**
 * Puts an object through its owner edge, which verifies it, writes it through to the origin (atomically) and
 * keeps it in its tiers. With no edge reachable it goes to the origin directly; edges fill from there later.
 */
async function store(ctx: IngestContext, key: string, bytes: Buffer): Promise<void> {
  try {
    await ctx.edges.put(key, bytes);
  } catch (err) {
    if (!isKdnError(err, 'EDGE_UNAVAILABLE')) throw err;
    ctx.log.warn({ key, err }, 'no edge took a chunk object; writing it to the origin directly');
    await ctx.origin.put(key, bytes, { contentLength: bytes.length });
  }
}

async function forEachLimited<T>(items: T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) await fn(items[next++]!);
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}
