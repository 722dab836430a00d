import type { Command } from 'commander';
import { KdnError } from '../../../common/errors.ts';
import type { QueryRequest } from '../../client/api-client.ts';
import { clientFor, collect, formatBytes, withServer } from '../client-options.ts';

interface QueryFlags {
  server: string;
  apiKey?: string;
  namespace?: string;
  doc?: string[];
  topK?: string;
  mode: string;
  blendRatio?: string;
  maxTokens?: string;
  temperature?: string;
  json?: boolean;
}

function intFlag(name: string, value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isFinite(n)) throw new KdnError('INVALID_ARGUMENT', `${name} must be a number, got "${value}"`);
  return n;
}

/** `kdn query "<question>"`: asks kdn; prints the answer and where its context came from. */
async function query(question: string, flags: QueryFlags): Promise<void> {
  if (flags.mode !== 'inject' && flags.mode !== 'recompute' && flags.mode !== 'blend') {
    throw new KdnError('INVALID_ARGUMENT', `--mode must be inject, blend or recompute, got "${flags.mode}"`);
  }
  const request: QueryRequest = { question, mode: flags.mode };
  const blendRatio = intFlag('--blend-ratio', flags.blendRatio);
  if (blendRatio !== undefined) {
    if (flags.mode !== 'blend') throw new KdnError('INVALID_ARGUMENT', '--blend-ratio needs --mode blend');
    if (!(blendRatio >= 0 && blendRatio <= 1)) {
      throw new KdnError('INVALID_ARGUMENT', `--blend-ratio must be from 0 to 1, got ${blendRatio}`, { hint: 'the share of context tokens to recompute, e.g. --blend-ratio 0.15' });
    }
    request.blendRatio = blendRatio;
  }
  if (flags.namespace) request.namespace = flags.namespace;
  if (flags.doc) request.documents = flags.doc;
  const topK = intFlag('--top-k', flags.topK);
  const maxTokens = intFlag('--max-tokens', flags.maxTokens);
  const temperature = intFlag('--temperature', flags.temperature);
  if (topK !== undefined) request.topK = topK;
  if (maxTokens !== undefined) request.maxTokens = maxTokens;
  if (temperature !== undefined) request.temperature = temperature;
  const answer = await clientFor(flags).query(request);
  if (flags.json) {
    process.stdout.write(`${JSON.stringify(answer)}\n`);
    return;
  }
  const t = answer.timings;
  const lines = [
    answer.answer,
    '',
    `context: ${answer.chunks.length} chunks, ${answer.tokens.context} tokens (${answer.tokens.reused} reused, ${answer.tokens.computed} computed incl. prompt), ${formatBytes(answer.bytes)} fetched`,
    ...answer.chunks.map((c) => `  ${c.title} #${c.index} ${c.kind} ${c.tier}${c.score === null ? '' : ` score ${c.score.toFixed(2)}`}`),
    ...(answer.note ? [`note: ${answer.note}`] : []),
    ...(answer.blend
      ? [`blend: ${answer.blend.recomputedTokens} of ${answer.tokens.context} context tokens recomputed (${answer.blend.selection}, ratio ${answer.blend.ratio}, after ${answer.blend.fullLayers} full layers) in ${answer.blend.ms.toFixed(1)} ms`]
      : []),
    `timings (ms): retrieval ${t.retrieval.toFixed(1)}, fetch ${t.fetch.toFixed(1)}, injection ${t.injection.toFixed(1)}, prefill ${t.prefill.toFixed(1)}, ttft ${t.ttft.toFixed(1)}, total ${t.total.toFixed(1)}`,
  ];
  process.stdout.write(`${lines.join('\n')}\n`);
}

export function register(program: Command): void {
  withServer(
    program
      .command('query')
      .description('ask a question over the uploaded knowledge')
      .argument('<question>', 'the question')
      .option('--namespace <name>', 'namespace (default "default")')
      .option('--doc <id-or-title>', 'use this whole document (repeatable, in order) instead of retrieval', collect)
      .option('--top-k <n>', 'chunks to retrieve when no --doc is given (default 4)')
      .option('--mode <mode>', 'inject (reuse cached KV), blend (reuse it, recomputing a share of the tokens so chunks attend to each other) or recompute (from scratch, for comparison)', 'inject')
      .option('--blend-ratio <r>', 'with --mode blend: the share of context tokens to recompute, 0 to 1 (default 0.15)')
      .option('--max-tokens <n>', 'most tokens to generate (default 64)')
      .option('--temperature <t>', 'sampling temperature, 0 is greedy (default 0)')
      .option('--json', 'print the whole response as JSON'),
  ).action(query);
}
