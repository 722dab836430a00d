import type { Engine } from '../../engine-adapter/types.ts';
import type { KVTensors } from '../../storage/kv-object/types.ts';
import { sinkToken } from '../sink-token.ts';

/** One chunk's place in an ingest: its tokens and the keys of its two KV objects. */
export interface ChunkPlan {
  index: number;
  tokenIds: number[];
  independentKey: string;
  /** null when the chain would pass the model's context length. */
  chainedKey: string | null;
}

/** Receives each computed object; `pending` holds the keys still to compute and is updated by the caller's `save`. */
export interface KVSink {
  pending: ReadonlySet<string>;
  save(key: string, tensors: KVTensors, tokenIds: number[]): Promise<void>;
}

/**
 * Runs `fn` when the engine is free for it: `cost` is the tokens it computes (see kdn/scheduler). Each call holds the
 * engine for one chunk at most, so other work can run between a document's chunks.
 */
export type EngineTurn = <T>(cost: number, fn: () => Promise<T>) => Promise<T>;

const direct: EngineTurn = (_cost, fn) => fn();

/**
 * Prefix-chained KV: one session per document, [sink] + chunk0 + chunk1 + ..., exporting each chunk's range as it
 * goes. Chunks before the first missing object are prefilled in one call without logits, only to rebuild the
 * attention state; their objects are not computed again.
 */
export async function computeChainedKV(engine: Engine, chunks: ChunkPlan[], sink: KVSink, turn: EngineTurn = direct): Promise<void> {
  const chained = chunks.filter((c) => c.chainedKey !== null);
  const first = chained.findIndex((c) => sink.pending.has(c.chainedKey!));
  if (first < 0) return;
  const total = chained.reduce((n, c) => n + c.tokenIds.length, 1);
  const session = engine.createSession({ capacity: total });
  try {
    // Rebuilding the attention state of the stored chunks takes one turn per chunk too.
    await turn(1, () => session.prefill([sinkToken(engine)], { logits: 'none' }));
    for (const chunk of chained.slice(0, first))
      await turn(chunk.tokenIds.length, () => session.prefill(chunk.tokenIds, { logits: 'none' }));
    for (const chunk of chained.slice(first)) {
      const start = session.length;
      const key = chunk.chainedKey!;
      const tensors = await turn(chunk.tokenIds.length, async () => {
        await session.prefill(chunk.tokenIds, { logits: 'none' });
        return sink.pending.has(key) ? session.exportKV({ start, end: session.length }) : undefined;
      });
      if (tensors) await sink.save(key, tensors, chunk.tokenIds);
    }
  } finally {
    session.dispose();
  }
}

/** Independent KV: each chunk alone after the sink token, so positions start at 1 (positionBase 1). */
export async function computeIndependentKV(engine: Engine, chunks: ChunkPlan[], sink: KVSink, turn: EngineTurn = direct): Promise<void> {
  const todo = chunks.filter((c) => sink.pending.has(c.independentKey));
  if (todo.length === 0) return;
  const longest = Math.max(...todo.map((c) => c.tokenIds.length));
  const session = engine.createSession({ capacity: longest + 1 });
  try {
    await turn(1, () => session.prefill([sinkToken(engine)], { logits: 'none' }));
    for (const chunk of todo) {
      // A chunk repeated in the document has the same key: computed once.
      if (!sink.pending.has(chunk.independentKey)) continue;
      const tensors = await turn(chunk.tokenIds.length, async () => {
        await session.prefill(chunk.tokenIds, { logits: 'none' });
        const kv = await session.exportKV({ start: 1, end: session.length });
        session.truncate(1);
        return kv;
      });
      await sink.save(chunk.independentKey, tensors, chunk.tokenIds);
    }
  } finally {
    session.dispose();
  }
}
