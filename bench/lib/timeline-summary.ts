/**
 * One line per measured query of a `ttft --timeline` file (timeline-file.ts): where the query's time went on the
 * engine's clock, so runs can be compared without reading every event. tools/timeline-summary.ts prints it.
 */
import { hundredths, type PieceEvent, type UploadEvent } from '../../engine-adapter/index.ts';
import type { TimelineEntry, TimelineRun } from './timeline-file.ts';

export interface TimelineSummary {
  context_tokens: number;
  mode: string;
  delivery: string | null;
  ttft_ms: number;
  /** When the engine's call began on the query's clock (reserving the session and sending the call before it). */
  engine_start_ms: number;
  /** On the engine's clock from here on: every object's first layer placed, the last layer placed, logits back. */
  first_layer_ms: number | null;
  placed_ms: number | null;
  logits_ms: number | null;
  /** The question's work left once the context was placed: the GPU's backlog and the last layers' compute. */
  tail_ms: number | null;
  pieces: number;
  /** The longest a piece waited from its submission until the GPU had run it: how far the GPU fell behind. */
  gpu_behind_ms: number | null;
  upload_mb: number;
  /** The first and last staging buffer sent, and the share of sends that waited on reads into them. */
  first_upload_ms: number | null;
  last_upload_ms: number | null;
  uploads_waited_on_reads: number | null;
  read_p50_ms: number | null;
  read_p90_ms: number | null;
  /**
   * An engine on its own thread: when the last layer's blocks had all reached it, and the longest any layer waited
   * from its blocks' arrival until it was written and the forward could run it (null: not recorded).
   */
  arrived_ms: number | null;
  ready_lag_ms: number | null;
}

export function summarizeRun(entry: TimelineEntry, run: TimelineRun): TimelineSummary {
  const t = run.timeline;
  const pieces = t.events.filter((e): e is PieceEvent => e.kind === 'piece');
  const sends = t.events.filter((e): e is UploadEvent => e.kind === 'upload' && e.bytes > 0);
  const behind = pieces.flatMap((p) => (p.doneMs === null ? [] : [p.doneMs - p.submittedMs]));
  return {
    context_tokens: entry.context_tokens,
    mode: entry.mode,
    delivery: entry.delivery,
    ttft_ms: run.ttft_ms,
    engine_start_ms: run.engine_start_ms,
    first_layer_ms: t.firstLayerMs,
    placed_ms: t.placedMs,
    logits_ms: t.logitsMs,
    tail_ms: t.logitsMs !== null && t.placedMs !== null ? hundredths(t.logitsMs - t.placedMs) : null,
    pieces: pieces.length,
    gpu_behind_ms: behind.length > 0 ? hundredths(Math.max(...behind)) : null,
    upload_mb: hundredths(sends.reduce((sum, e) => sum + e.bytes, 0) / 1e6),
    first_upload_ms: sends[0]?.atMs ?? null,
    last_upload_ms: sends.at(-1)?.atMs ?? null,
    uploads_waited_on_reads: sends.length > 0 ? hundredths(sends.filter((e) => e.waitedOnReads).length / sends.length) : null,
    read_p50_ms: t.reads?.p50Ms ?? null,
    read_p90_ms: t.reads?.p90Ms ?? null,
    ...arrivals(t.layersArrivedMs, t.layersReadyMs),
  };
}

/** TimelineSummary's arrived_ms and ready_lag_ms; files written before the per-layer marks have neither. */
function arrivals(arrived?: (number | null)[], ready?: (number | null)[]): Pick<TimelineSummary, 'arrived_ms' | 'ready_lag_ms'> {
  if (!arrived?.length || arrived.includes(null)) return { arrived_ms: null, ready_lag_ms: null };
  const at = arrived as number[];
  const lags = at.flatMap((ms, layer) => {
    const written = ready?.[layer];
    return written === undefined || written === null ? [] : [written - ms];
  });
  return { arrived_ms: Math.max(...at), ready_lag_ms: lags.length > 0 ? hundredths(Math.max(...lags)) : null };
}

export function summarizeTimelines(entries: readonly TimelineEntry[]): TimelineSummary[] {
  return entries.flatMap((entry) => entry.runs.map((run) => summarizeRun(entry, run)));
}
