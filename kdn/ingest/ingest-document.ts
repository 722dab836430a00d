import { isKdnError } from '../../common/errors.ts';
import type { Logger } from '../../common/log.ts';
import type { EdgeClient } from '../../edge/client/client.ts';
import type { Engine } from '../../engine-adapter/types.ts';
import type { ObjectStore } from '../../storage/object-store.ts';
import { codecToString, type EncodeMeta } from '../../storage/kv-object/index.ts';
import type { CodecSpec, KVTensors } from '../../storage/kv-object/types.ts';
import type { Catalog } from '../catalog.ts';
import { chainedKey, independentKey, type KeyScope } from '../keys.ts';
import type { ChunkObjects, Manifest, ObjectRef } from '../manifest.ts';
import type { TokenizedDocument } from './ingest-thread.ts';
import { computeChainedKV, computeIndependentKV, type ChunkPlan, type EngineTurn } from './compute-kv.ts';

export interface IngestContext {
  engine: Engine;
  origin: ObjectStore;
  edges: EdgeClient;
  catalog: Catalog;
  codec: CodecSpec;
  /** Extra quality levels stored beside `codec`, each chunk's objects encoded from the same KV (config `codecLevels`). */
  levels?: CodecSpec[];
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
  /** The tenant uploading it: its job, and its quota pays for the document (also in a shared namespace). */
  uploadedBy: string;
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
 * `ctx.turn` one chunk at a time; `signal` stops the job before its manifest. Every object it will name is held in
 * the catalog from before it looks for it until the manifest is published, so a concurrent delete keeps it;
 * `written` collects the keys it stored, for the caller to delete should it not publish.
 */
export async function ingestDocument(
  ctx: IngestContext,
  doc: DocumentInput,
  progress: IngestProgress,
  signal?: AbortSignal,
  written: Set<string> = new Set(),
): Promise<Manifest> {
  const { engine } = ctx;
  const { tokenIds, chunks } = doc.tokenized ?? (await ctx.tokenize(doc.text, ctx.chunkBudget));
  signal?.throwIfAborted();
  const codecs = [ctx.codec, ...(ctx.levels ?? [])];
  const plans = codecs.map((codec) =>
    planKeys(
      { modelFingerprint: engine.info.fingerprint, codec, salt: doc.salt },
      chunks.map((c) => c.tokenIds),
      engine.info.maxPositionEmbeddings,
    ),
  );
  const outputs = levelOutputs(codecs, plans);
  const keys = [...new Set([...outputs.values()].flatMap((list) => list.map((o) => o.key)))];
  progress.chunks = chunks.length;
  progress.objects.total = keys.length;

  const release = await ctx.catalog.hold(keys);
  try {
    const sizes = await storeMissing(ctx, { outputs, plans, keys }, progress, written);
    // A job cancelled during its last object's store does not publish its manifest.
    signal?.throwIfAborted();
    const manifest = manifestOf(ctx, doc, tokenIds.length, chunks, { codecs, plans, sizes });
    await ctx.catalog.publish(manifest);
    return manifest;
  } finally {
    release();
  }
}

/** Finds which of `keys` the origin has, and computes and stores the others; answers every object's size. */
async function storeMissing(
  ctx: IngestContext,
  { outputs, plans, keys }: { outputs: Map<string, { key: string; codec: CodecSpec }[]>; plans: ChunkPlan[][]; keys: string[] },
  progress: IngestProgress,
  written: Set<string>,
): Promise<Map<string, number>> {
  const { engine } = ctx;
  const sizes = new Map<string, number>();
  await forEachLimited(keys, HEAD_CONCURRENCY, async (key) => {
    const info = await ctx.origin.head(key);
    if (!info) return;
    sizes.set(key, info.size);
    progress.objects.done++;
    progress.objects.skipped++;
    progress.bytes += info.size;
  });

  // The engine computes a chunk's KV once (keyed by the main codec's key) for every level still missing.
  const pending = new Set([...outputs].filter(([, list]) => list.some((o) => !sizes.has(o.key))).map(([key]) => key));
  const sink = {
    pending,
    save: async (slot: string, tensors: KVTensors, ids: number[]): Promise<void> => {
      const todo = outputs.get(slot)!.filter((o) => !sizes.has(o.key));
      for (const [n, { key, codec }] of todo.entries()) {
        // encode may take the tensors' arrays: every level but the last encodes a copy.
        const input = n === todo.length - 1 ? tensors : copyTensors(tensors);
        const bytes = await ctx.encode(input, { modelFingerprint: engine.info.fingerprint, tokenIds: ids, codec });
        // Counted before the store ends: a store cut off midway may still have reached the origin.
        written.add(key);
        await store(ctx, key, bytes);
        sizes.set(key, bytes.length);
        progress.objects.done++;
        progress.objects.computed++;
        progress.bytes += bytes.length;
      }
      pending.delete(slot);
    },
  };
  await computeChainedKV(engine, plans[0]!, sink, ctx.turn);
  await computeIndependentKV(engine, plans[0]!, sink, ctx.turn);
  return sizes;
}

function manifestOf(
  ctx: IngestContext,
  doc: DocumentInput,
  tokens: number,
  chunks: TokenizedDocument['chunks'],
  { codecs, plans, sizes }: { codecs: CodecSpec[]; plans: ChunkPlan[][]; sizes: ReadonlyMap<string, number> },
): Manifest {
  return {
    version: 1,
    id: doc.id,
    namespace: doc.namespace,
    title: doc.title,
    uploadedBy: doc.uploadedBy,
    createdAt: new Date().toISOString(),
    modelFingerprint: ctx.engine.info.fingerprint,
    codec: codecToString(ctx.codec),
    chunkBudget: ctx.chunkBudget,
    tokens,
    bytes: [...sizes.values()].reduce((a, b) => a + b, 0),
    chunks: chunks.map((chunk, i) => ({
      index: chunk.index,
      tokenIds: chunk.tokenIds,
      text: chunk.text,
      ...objectsOf(plans[0]![i]!, sizes),
      ...(codecs.length > 1
        ? { levels: codecs.slice(1).map((codec, l) => ({ codec: codecToString(codec), ...objectsOf(plans[l + 1]![i]!, sizes) })) }
        : {}),
    })),
  };
}

/** One chunk's two objects under one codec, with their sizes. */
function objectsOf(plan: ChunkPlan, sizes: ReadonlyMap<string, number>): ChunkObjects {
  const ref = (key: string): ObjectRef => ({ key, bytes: sizes.get(key)! });
  return { independent: ref(plan.independentKey), chained: plan.chainedKey ? ref(plan.chainedKey) : null };
}

/**
 * For each object key of the main codec, the objects encoded from the same computed KV: its own and those of every
 * level (a level's chain follows its own keys, so its objects line up chunk for chunk with the main codec's).
 */
function levelOutputs(codecs: CodecSpec[], plans: ChunkPlan[][]): Map<string, { key: string; codec: CodecSpec }[]> {
  const outputs = new Map<string, { key: string; codec: CodecSpec }[]>();
  const add = (slot: string, key: string, codec: CodecSpec): void => {
    const list = outputs.get(slot) ?? [];
    if (!list.some((o) => o.key === key)) list.push({ key, codec });
    outputs.set(slot, list);
  };
  plans[0]!.forEach((main, i) => {
    codecs.forEach((codec, c) => {
      const plan = plans[c]![i]!;
      add(main.independentKey, plan.independentKey, codec);
      if (main.chainedKey && plan.chainedKey) add(main.chainedKey, plan.chainedKey, codec);
    });
  });
  return outputs;
}

function copyTensors(tensors: KVTensors): KVTensors {
  return { ...tensors, perLayer: tensors.perLayer.map((l) => ({ ...l, keys: l.keys.slice(), values: l.values.slice() })) };
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
