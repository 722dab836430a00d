import { Command } from 'commander';

const program = new Command();
program
  .name('kdn')
  .description('Knowledge Delivery Network: compute the KV cache of knowledge once, deliver it from edge caches')
  .showHelpAfterError();

// Each part registers its own subcommands; keep one line per command module.

program.parseAsync(process.argv).catch((err: unknown) => {
  const e = err as { code?: string; message?: string; hint?: string };
  process.stderr.write(`kdn: ${e.code ? `${e.code}: ` : ''}${e.message ?? String(err)}\n`);
  if (e.hint) process.stderr.write(`hint: ${e.hint}\n`);
  process.exitCode = 1;
});
