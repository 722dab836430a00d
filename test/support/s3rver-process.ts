/**
 * Runs s3rver as its own process, for multi-process tests:
 *   node --import tsx test/support/s3rver-process.ts --port N --dir D --bucket B
 * Prints one JSON line {"ready":true,"port":N,"endpoint":...,"url":...} on stdout once it listens, and stops on
 * SIGTERM or SIGINT. --port 0 (the default) picks a free port; without --dir it uses a temp folder it removes on exit.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { runS3rver } from './s3rver.ts';

const { values } = parseArgs({
  options: {
    port: { type: 'string', default: '0' },
    dir: { type: 'string' },
    bucket: { type: 'string', default: 'kdn-test' },
  },
});

const port = Number(values.port);
if (!Number.isInteger(port) || port < 0 || port > 65535) {
  process.stderr.write(`s3rver-process: --port must be 0-65535, got "${values.port}"\n`);
  process.exit(2);
}
const ownDir = values.dir === undefined;
const dir = values.dir ?? (await mkdtemp(path.join(tmpdir(), 'kdn-s3rver-')));

try {
  const server = await runS3rver({ port, dir, bucket: values.bucket });
  const shutdown = async (): Promise<void> => {
    await server.stop();
    if (ownDir) await rm(dir, { recursive: true, force: true });
    process.exit(0);
  };
  process.once('SIGTERM', () => void shutdown());
  process.once('SIGINT', () => void shutdown());
  process.stdout.write(`${JSON.stringify({ ready: true, port: server.port, endpoint: server.endpoint, url: server.url })}\n`);
} catch (err) {
  process.stderr.write(`s3rver-process: ${err instanceof Error ? err.message : String(err)}\n`);
  if (ownDir) await rm(dir, { recursive: true, force: true });
  process.exit(1);
}
