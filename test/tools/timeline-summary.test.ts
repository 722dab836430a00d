/**
 * tools/timeline-summary.ts over a ttft --timeline file: one row per measured query, its figures from the events
 * (the question's tail after placing, how far the GPU fell behind, uploads and the share that waited on reads), read
 * plain or gzipped; a file that is not a timeline fails with a message.
 */
import { expect } from 'chai';
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { gzipSync } from 'node:zlib';
import type { TimelineEntry } from '../../bench/lib/timeline-file.ts';

const ROOT = join(import.meta.dirname, '..', '..');
const TOOL = join(ROOT, 'tools', 'timeline-summary.ts');
const run = promisify(execFile);

const ENTRY: TimelineEntry = {
  context_tokens: 8192,
  mode: 'inject-int4',
  delivery: 'shm',
  inject_path: 'overlapped',
  runs: [
    {
      ttft_ms: 60,
      engine_start_ms: 5,
      timeline: {
        startedAtEpoch: 0,
        firstLayerMs: 4,
        placedMs: 40,
        logitsMs: 52.5,
        events: [
          { kind: 'upload', atMs: 0.1, bytes: 0, dispatches: 0, waitedOnReads: false },
          { kind: 'upload', atMs: 6, bytes: 16_000_000, dispatches: 0, waitedOnReads: true },
          { kind: 'gate', layer: 0, askedMs: 1, writtenMs: 4, flushedMs: 6, through: 16 },
          { kind: 'piece', from: 0, to: 16, submittedMs: 7, doneMs: 30 },
          { kind: 'upload', atMs: 38, bytes: 4_000_000, dispatches: 12, waitedOnReads: false },
          { kind: 'gate', layer: 16, askedMs: 7, writtenMs: 39, flushedMs: 40, through: 32 },
          { kind: 'piece', from: 16, to: 32, submittedMs: 41, doneMs: 52 },
        ],
        reads: { count: 2, p50Ms: 1.5, p90Ms: 3, maxMs: 3, lastDoneMs: 37 },
        layersReadyMs: [4, 4, 39, 39],
        layersArrivedMs: [3, 3.5, 20, 30],
      },
    },
  ],
};

interface Row {
  file: string;
  tail_ms: number;
  gpu_behind_ms: number;
  upload_mb: number;
  first_upload_ms: number;
  last_upload_ms: number;
  uploads_waited_on_reads: number;
  pieces: number;
  read_p90_ms: number;
  arrived_ms: number | null;
  ready_lag_ms: number | null;
}

describe('tools/timeline-summary.ts', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'kdn-timeline-'));
  });
  after(() => rm(dir, { recursive: true, force: true }));

  it('gives each measured query its tail, GPU backlog and uploads, from a plain or gzipped file', async () => {
    const body = JSON.stringify({ command: 'ttft --timeline', entries: [ENTRY] });
    await writeFile(join(dir, 'a.json'), body);
    await writeFile(join(dir, 'b.json.gz'), gzipSync(body));
    const { stdout } = await run(process.execPath, ['--import', 'tsx', TOOL, join(dir, 'a.json'), join(dir, 'b.json.gz'), '--json'], {
      cwd: ROOT,
    });
    const rows = JSON.parse(stdout) as Row[];
    expect(rows.map((r) => r.file)).to.deep.equal([join(dir, 'a.json'), join(dir, 'b.json.gz')]);
    for (const row of rows) {
      expect(row).to.include({
        tail_ms: 12.5,
        gpu_behind_ms: 23,
        upload_mb: 20,
        first_upload_ms: 6,
        last_upload_ms: 38,
        uploads_waited_on_reads: 0.5,
        pieces: 2,
        read_p90_ms: 3,
        arrived_ms: 30,
        ready_lag_ms: 19,
      });
    }
  });

  it('leaves the arrival figures empty for a query whose blocks were not received on an engine thread', async () => {
    const timeline = { ...ENTRY.runs[0]!.timeline, layersArrivedMs: undefined };
    const body = JSON.stringify({ entries: [{ ...ENTRY, runs: [{ ...ENTRY.runs[0]!, timeline }] }] });
    await writeFile(join(dir, 'c.json'), body);
    const { stdout } = await run(process.execPath, ['--import', 'tsx', TOOL, join(dir, 'c.json'), '--json'], { cwd: ROOT });
    const [row] = JSON.parse(stdout) as Row[];
    expect(row).to.include({ arrived_ms: null, ready_lag_ms: null, tail_ms: 12.5 });
  });

  it('fails with a message, not a stack, on a file that is not a timeline', async () => {
    await writeFile(join(dir, 'not.json'), JSON.stringify({ records: [] }));
    const err = await run(process.execPath, ['--import', 'tsx', TOOL, join(dir, 'not.json')], { cwd: ROOT }).then(
      () => null,
      (e: { code: number; stderr: string }) => e,
    );
    expect(err?.code).to.equal(1);
    expect(err?.stderr).to.match(/not a ttft --timeline file/);
  });
});
