import type { ContextPiece, PieceObject } from './context-plan.ts';
import type { DeliveryEstimate } from './delivery-estimate.ts';

/** The level a query's chunks were fetched at, and why. */
export interface LevelChoice {
  /** The codec picked (chunks without an object at it keep their main codec's). */
  codec: string;
  /** Bytes of every chunk's object at that codec, and the fetch time expected for them at `bytesPerSecond`. */
  bytes: number;
  expectedFetchMs: number;
  bytesPerSecond: number;
  ttftTargetMs: number;
}

/**
 * Picks one stored level for all of a query's chunks: the highest-quality one whose objects together are expected
 * to arrive within the TTFT target at the estimated delivery throughput, or the smallest when none is. Quality goes
 * with size (each codec's fidelity falls with its bytes: docs/ARCHITECTURE.md, KV codecs), so the candidates are
 * ranked by the bytes the query would fetch. Without a target, or without levels, the pieces keep the main codec.
 */
export function pickLevel(
  pieces: ContextPiece[],
  ttftTargetMs: number | undefined,
  delivery: DeliveryEstimate,
): { pieces: ContextPiece[]; choice: LevelChoice | null } {
  if (ttftTargetMs === undefined || !pieces.some((p) => p.levels.length > 0)) return { pieces, choice: null };
  const codecs = new Set(pieces.flatMap((p) => [p.codec, ...p.levels.map((l) => l.codec)]));
  const ranked = [...codecs]
    .map((codec) => ({ codec, bytes: pieces.reduce((n, p) => n + objectAt(p, codec).bytes, 0) }))
    .sort((a, b) => b.bytes - a.bytes);
  const picked = ranked.find((c) => delivery.expectedMs(c.bytes) <= ttftTargetMs) ?? ranked[ranked.length - 1]!;
  const choice = {
    codec: picked.codec,
    bytes: picked.bytes,
    expectedFetchMs: delivery.expectedMs(picked.bytes),
    bytesPerSecond: delivery.bytesPerSecond,
    ttftTargetMs,
  };
  return { pieces: pieces.map((p) => ({ ...p, ...objectAt(p, picked.codec) })), choice };
}

/** The piece's object at `codec`, or its main one when that level is not stored for it. */
function objectAt(piece: ContextPiece, codec: string): PieceObject {
  return piece.levels.find((l) => l.codec === codec) ?? { codec: piece.codec, key: piece.key, bytes: piece.bytes };
}
