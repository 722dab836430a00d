import { Command } from 'commander';
import { register as registerServe } from './commands/serve.ts';
import { register as registerUpload } from './commands/upload.ts';
import { register as registerQuery } from './commands/query.ts';
import { register as registerDocs } from './commands/docs.ts';
import { register as registerJobs } from './commands/jobs.ts';
import { register as registerWarm } from './commands/warm.ts';
import { register as registerInspect } from './commands/inspect.ts';
import { register as registerEdge } from './commands/edge.ts';
import { register as registerGenerate } from './commands/generate.ts';
import { register as registerModelInfo } from './commands/model-info.ts';

// A reader that stops early (`kdn docs | head`) closes the pipe: that ends the command, it is not an error.
process.stdout.on('error', (err: NodeJS.ErrnoException) => {
  if (err.code === 'EPIPE') process.exit(0);
  throw err;
});

const program = new Command();
program
  .name('kdn')
  .description('Knowledge Delivery Network: compute the KV cache of knowledge once, deliver it from edge caches')
  .showHelpAfterError();

// Each part registers its own subcommands; keep one line per command module.
registerServe(program);
registerUpload(program);
registerQuery(program);
registerDocs(program);
registerJobs(program);
registerWarm(program);
registerInspect(program);
registerEdge(program);
registerGenerate(program);
registerModelInfo(program);

program.parseAsync(process.argv).catch((err: unknown) => {
  const e = err as { code?: string; message?: string; hint?: string };
  process.stderr.write(`kdn: ${e.code ? `${e.code}: ` : ''}${e.message ?? String(err)}\n`);
  if (e.hint) process.stderr.write(`hint: ${e.hint}\n`);
  process.exitCode = 1;
});
