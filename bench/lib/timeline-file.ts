import { rename, writeFile } from 'node:fs/promises';
import type { PlacingTimelineReport } from '../../engine-adapter/index.ts';

/** One measured query's engine timeline: its zero `engine_start_ms` after the query began (bench/ttft.ts's clock). */
export interface TimelineRun {
  ttft_ms: number;
  engine_start_ms: number;
  timeline: PlacingTimelineReport;
}

/** Every measured run of one inject measurement. */
export interface TimelineEntry {
  context_tokens: number;
  mode: string;
  delivery: 'socket' | 'shm' | null;
  inject_path: string;
  runs: TimelineRun[];
}

/**
 * The engine's placing timelines of a ttft run (`--timeline FILE`, engine-adapter/placing-timeline.ts), written whole
 * after each context so that a run cut short keeps what it measured. Each write replaces the file atomically.
 */
export class TimelineFile {
  private readonly entries: TimelineEntry[] = [];

  constructor(
    readonly path: string,
    private readonly command: string,
  ) {}

  add(entry: TimelineEntry): void {
    if (entry.runs.length > 0) this.entries.push(entry);
  }

  async write(): Promise<void> {
    const tmp = `${this.path}.${process.pid}.tmp`;
    await writeFile(tmp, `${JSON.stringify({ command: this.command, entries: this.entries }, null, 1)}\n`);
    await rename(tmp, this.path);
  }
}
