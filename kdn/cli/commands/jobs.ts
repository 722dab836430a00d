import type { Command } from 'commander';
import type { JobView } from '../../ingest/jobs.ts';
import type { QueryJobView } from '../../query/query-service.ts';
import { clientFor, formatBytes, withServer } from '../client-options.ts';
import { printJsonOr } from '../printable.ts';

interface JobsFlags {
  server: string;
  apiKey?: string;
  status?: string;
  kind?: 'ingest' | 'query';
  json?: boolean;
}

function describe(job: JobView | QueryJobView): string {
  if (job.kind === 'query') return `${job.id}  query   ${job.status.padEnd(9)}  since ${job.createdAt}`;
  const o = job.progress.objects;
  const progress = o.total > 0 ? `${o.done}/${o.total} objects, ${formatBytes(job.progress.bytes)}` : 'not started';
  const error = job.error ? `  ${job.error.code}: ${job.error.message}` : '';
  return `${job.id}  ingest  ${job.status.padEnd(9)}  ${job.document.title} (${job.document.namespace})  ${progress}${error}`;
}

export function register(program: Command): void {
  const jobs = program.command('jobs').description("list and cancel this key's tenant's work: queries in flight and ingest jobs");

  withServer(jobs.command('list', { isDefault: true }).description('list queries in flight and ingest jobs (newest first)'))
    .option('--status <status>', 'only jobs in this state: queued, running, done, failed or cancelled')
    .option('--kind <kind>', 'only "ingest" jobs or "query" jobs')
    .option('--json', 'print JSON')
    .action(async (flags: JobsFlags) => {
      const list = await clientFor(flags).jobs({
        ...(flags.status ? { status: flags.status } : {}),
        ...(flags.kind ? { kind: flags.kind } : {}),
      });
      printJsonOr(flags.json, list, () => (list.jobs.length === 0 ? ['no jobs'] : list.jobs.map(describe)));
    });

  withServer(jobs.command('cancel').description('cancel a queued or running job; returns once it has stopped').argument('<id>'))
    .option('--json', 'print JSON')
    .action(async (id: string, flags: JobsFlags) => {
      const { job } = await clientFor(flags).cancelJob(id);
      printJsonOr(flags.json, job, () => [describe(job)]);
    });
}
