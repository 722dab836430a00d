import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type ServeOptions, startKdnProcess, startKdnServe, startProcess, type Started } from '../../../fixtures/processes.ts';
import { authEnv } from './auth.ts';

export type { Started };

/** A test server (startKdnServe) with the fault tests' credentials. */
export function startKdn(options: ServeOptions): Promise<Started> {
  return startKdnServe({ ...options, env: { ...authEnv(), ...options.env } });
}

/** `kdn edge --json` on port 0 with the shared edge secret. */
export function startEdgeProcess(args: string[], env: NodeJS.ProcessEnv = {}): Promise<Started> {
  return startKdnProcess(['edge', '--port', '0', ...args], { ...authEnv(), ...env });
}

/** s3rver in its own process (so it can be killed or stopped); ready.url is its s3:// origin URL. */
export function startS3Process(dir: string, bucket: string): Promise<Started> {
  return startProcess(['test/support/s3rver-process.ts', '--port', '0', '--dir', dir, '--bucket', bucket], { node: ['--import', 'tsx'] });
}

/** A temp directory removed by the returned cleanup. */
export async function tempDir(prefix: string): Promise<{ dir: string; cleanup: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  return { dir, cleanup: () => rm(dir, { recursive: true, force: true }) };
}

/** Collects a started process's stderr from now on, whole (Started.stderr keeps only its tail). */
export function collectStderr(started: Started): () => string {
  let text = '';
  started.child.stderr!.on('data', (chunk: Buffer) => (text += chunk.toString('utf8')));
  return () => text;
}

/** Pino JSON lines of a log text (other lines are skipped). */
export function logLines(text: string): Record<string, unknown>[] {
  const out: Record<string, unknown>[] = [];
  for (const line of text.split('\n')) {
    if (!line.startsWith('{')) continue;
    try {
      out.push(JSON.parse(line) as Record<string, unknown>);
    } catch {
      // a line cut by the collector's start; not a log record
    }
  }
  return out;
}
