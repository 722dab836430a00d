import { readFileSync } from 'node:fs';
import { Command, CommanderError } from 'commander';
import { EXIT, exitCodeFor, inCliTerms } from './exit-codes.ts';
import { printable } from './printable.ts';
import { Progress } from './progress.ts';

// A reader that stops early (`kdn docs | head`) closes the pipe: that ends the command, it is not an error.
process.stdout.on('error', (err: NodeJS.ErrnoException) => {
  if (err.code === 'EPIPE') process.exit(0);
  throw err;
});

// A command whose last request neither answers nor fails leaves nothing to wake its await: Node would then end with
// status 13 and no message. 'beforeExit' (not emitted by an explicit process.exit) catches that case.
let commandSettled = false;
process.on('beforeExit', () => {
  if (commandSettled) return;
  Progress.endLine();
  process.stderr.write('kdn: INTERNAL: the command stopped with a request that neither answered nor failed\n');
  process.stderr.write('hint: run it again; if it repeats, check that --server (or KDN_SERVER) points at a running kdn\n');
  process.exitCode = EXIT.failed;
});

type Register = (program: Command) => void;

/**
 * The subcommands, each loaded only when it runs: the server, the engine and the S3 client are heavy to import, and
 * `kdn --help` or `kdn query` need none of them. The summaries are what `kdn --help` lists.
 */
const COMMANDS: Record<string, { summary: string; load: () => Promise<{ register: Register }> }> = {
  serve: {
    summary: 'run kdn: REST API, ingest, retrieval and queries (with an embedded edge unless --edges)',
    load: () => import('./commands/serve.ts'),
  },
  upload: { summary: 'upload text or Markdown files as knowledge documents', load: () => import('./commands/upload.ts') },
  query: { summary: 'ask a question over the uploaded knowledge', load: () => import('./commands/query.ts') },
  docs: { summary: 'list, show and delete knowledge documents', load: () => import('./commands/docs.ts') },
  jobs: { summary: 'list the engine work queued and running, and cancel it', load: () => import('./commands/jobs.ts') },
  warm: { summary: "bring a namespace's KV objects into the edges that own them", load: () => import('./commands/warm.ts') },
  inspect: { summary: 'print a KV object header as JSON and verify its checksums', load: () => import('./commands/inspect.ts') },
  edge: { summary: 'run an edge cache server in front of an origin object store', load: () => import('./commands/edge.ts') },
  generate: { summary: 'generate text from a prompt with a local model', load: () => import('./commands/generate.ts') },
  'model-info': {
    summary: "print a model directory's architecture, sizes and fingerprint",
    load: () => import('./commands/model-info.ts'),
  },
};

const { version } = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };

const program = new Command();
program
  .name('kdn')
  .description('Knowledge Delivery Network: compute the KV cache of knowledge once, deliver it from edge caches')
  .version(version, '-V, --version', 'print the kdn version')
  .addHelpText(
    'after',
    '\nExit status: 0 success, 1 the request failed, 2 usage error, 3 server unreachable, 4 API key refused.\n' +
      'Client commands talk to --server (env KDN_SERVER, default http://127.0.0.1:8080).',
  )
  .showHelpAfterError()
  .exitOverride();

// `kdn help <command>` is `kdn <command> --help`.
const name = process.argv[2] === 'help' && process.argv[3] !== undefined ? process.argv[3] : process.argv[2];
const command = name === undefined ? undefined : COMMANDS[name];
if (command) {
  (await command.load()).register(program);
} else {
  // Help, --version or an unknown command: list every command without loading any.
  for (const [commandName, { summary }] of Object.entries(COMMANDS)) program.command(commandName).description(summary);
}

try {
  await program.parseAsync(process.argv);
} catch (err) {
  process.exitCode = report(err);
}
commandSettled = true;

/** Prints a failure on stderr (in the CLI's terms) and returns the exit status for it. */
function report(err: unknown): number {
  if (err instanceof CommanderError) {
    // Commander has printed help, the version, or what was wrong with the command line.
    return err.exitCode === 0 ? EXIT.ok : EXIT.usage;
  }
  Progress.endLine();
  const e = err as { code?: string; message?: string; hint?: string };
  process.stderr.write(`kdn: ${e.code ? `${e.code}: ` : ''}${printable(inCliTerms(e.message ?? String(err)))}\n`);
  if (e.hint) process.stderr.write(`hint: ${printable(inCliTerms(e.hint))}\n`);
  return exitCodeFor(err);
}
