import { readFile } from 'node:fs/promises';
import { basename } from 'node:path';
import type { Command } from 'commander';
import type { JobView } from '../../ingest/jobs.ts';
import { clientFor, formatBytes, withServer } from '../client-options.ts';
import { UsageError } from '../exit-codes.ts';
import { Progress } from '../progress.ts';

interface UploadFlags {
  server: string;
  apiKey?: string;
  dataDir?: string;
  namespace?: string;
  title?: string;
  wait: boolean;
  json?: boolean;
}

/** `kdn upload <files...>`: one document per file (title: the file name), waiting for each ingest job. */
async function upload(files: string[], flags: UploadFlags): Promise<void> {
  if (flags.title !== undefined && files.length > 1) {
    throw new UsageError('--title names one document, but several files were given', 'upload files one at a time to title them');
  }
  const client = clientFor(flags);
  const results: JobView[] = [];
  for (const file of files) {
    let text: string;
    try {
      text = await readFile(file, 'utf8');
    } catch (err) {
      throw new UsageError(
        `cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`,
        'check the path',
        'NOT_FOUND',
      );
    }
    if (text.trim() === '') throw new UsageError(`${file} is empty`, 'upload a file with some text in it');
    const title = flags.title ?? basename(file);
    const { job, document } = await client.upload({ title, text, ...(flags.namespace ? { namespace: flags.namespace } : {}) });
    if (!flags.wait) {
      results.push(job);
      if (!flags.json) process.stdout.write(`${title}: document ${document.id}, job ${job.id} (${job.status})\n`);
      continue;
    }
    const progress = new Progress(`ingest ${title}`);
    const done = await client.waitForJob(job.id, (j) => {
      if (!flags.json && j.progress.objects.total > 0)
        progress.update(j.progress.objects.done, j.progress.objects.total, formatBytes(j.progress.bytes));
    });
    if (!flags.json) progress.finish();
    results.push(done);
    if (!flags.json) {
      const o = done.progress.objects;
      process.stdout.write(
        `${title}: document ${document.id}, ${done.progress.chunks} chunks, ${o.total} KV objects ` +
          `(${o.computed} computed, ${o.skipped} already stored), ${formatBytes(done.progress.bytes)}\n`,
      );
    }
  }
  if (flags.json) process.stdout.write(`${JSON.stringify(results)}\n`);
}

export function register(program: Command): void {
  withServer(
    program
      .command('upload')
      .description('upload text or Markdown files as knowledge documents and wait for their KV caches')
      .argument('<files...>', 'files to upload; each becomes a document titled by its file name')
      .option('--namespace <name>', 'namespace (default "default")')
      .option('--title <title>', 'title of the document (one file only)')
      .option('--no-wait', 'return once the ingest jobs are queued')
      .option('--json', 'print the jobs as JSON'),
  ).action(upload);
}
