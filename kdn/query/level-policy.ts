import type { ContextPiece, PieceObject } from './context-plan.ts';
import type { DeliveryEstimate } from './delivery-estimate.ts';

/** The level a query's chunks were fetched at, and why. */
export interface LevelChoice {
  /** The codec picked (chunks without an object at it keep their main codec's). */
  codec: string;
  /** Bytes of every chunk's object at that codec, and the fetch time expected for them at `bytesPerSecond`. */
  bytes: number;
  expectedFetchMs: number;
  /** The throughput that expectation assumes (over all the edges the objects come from). */
  bytesPerSecond: number;
  ttftTargetMs: number;
  /** Picked one level above what fits, to sample the delivery throughput (delivery-estimate.ts). */
  probe: boolean;
}

/**
 * Picks one stored level for all of a query's chunks: the highest-quality one whose objects are expected to arrive
 * within the TTFT target at the estimated delivery throughput, or the smallest when none is. Quality goes with size
 * (each codec's fidelity falls with its bytes: docs/ARCHITECTURE.md, KV codecs), so the candidates are ranked by the
 * bytes the query would fetch. Objects come from several edges at once, each at its own estimated rate
 * (`edgeOf` says which edge serves a key), so a level's expected time is its slowest edge's. When the estimate is
 * due a probe (delivery-estimate.ts), the level one above the pick is taken instead, so the estimate gets a sample
 * large enough to measure throughput. Without a target, or without levels, the pieces keep the main codec.
 */
export function pickLevel(
  pieces: ContextPiece[],
  ttftTargetMs: number | undefined,
  delivery: DeliveryEstimate,
  edgeOf: (key: string) => string | undefined = () => undefined,
): { pieces: ContextPiece[]; choice: LevelChoice | null } {
  if (ttftTargetMs === undefined || !pieces.some((p) => p.levels.length > 0)) return { pieces, choice: null };
  const codecs = new Set(pieces.flatMap((p) => [p.codec, ...p.levels.map((l) => l.codec)]));
  const ranked = [...codecs]
    .map((codec) => {
      const objects = pieces.map((p) => objectAt(p, codec));
      return { codec, bytes: objects.reduce((n, o) => n + o.bytes, 0), expectedFetchMs: expectedMs(objects, delivery, edgeOf) };
    })
    .sort((a, b) => b.bytes - a.bytes);
  const fits = ranked.findIndex((c) => c.expectedFetchMs <= ttftTargetMs);
  const at = fits === -1 ? ranked.length - 1 : fits;
  const probe = at > 0 && delivery.probeDue;
  if (probe) delivery.probed();
  const picked = ranked[probe ? at - 1 : at]!;
  const choice = {
    codec: picked.codec,
    bytes: picked.bytes,
    expectedFetchMs: picked.expectedFetchMs,
    bytesPerSecond: picked.expectedFetchMs > 0 ? (picked.bytes / picked.expectedFetchMs) * 1000 : delivery.bytesPerSecond(),
    ttftTargetMs,
    probe,
  };
  return { pieces: pieces.map((p) => ({ ...p, ...objectAt(p, picked.codec) })), choice };
}

/** Milliseconds until the last of `objects` arrives: edges deliver side by side, so the slowest edge's share. */
function expectedMs(objects: PieceObject[], delivery: DeliveryEstimate, edgeOf: (key: string) => string | undefined): number {
  const byEdge = new Map<string | undefined, number>();
  for (const o of objects) {
    const edge = edgeOf(o.key);
    byEdge.set(edge, (byEdge.get(edge) ?? 0) + o.bytes);
  }
  return Math.max(0, ...[...byEdge].map(([edge, bytes]) => delivery.expectedMs(bytes, edge)));
}
/** The piece's object at `codec`, or its main one when that level is not stored for it. */
function objectAt(piece: ContextPiece, codec: string): PieceObject {
  return piece.levels.find((l) => l.codec === codec) ?? { codec: piece.codec, key: piece.key, bytes: piece.bytes };
}
