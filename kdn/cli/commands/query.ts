import type { Command } from 'commander';
import type { QueryRequest, QueryResponse } from '../../client/api-client.ts';
import { clientFor, collect, formatBytes, withServer } from '../client-options.ts';
import { UsageError } from '../exit-codes.ts';
import { printLines } from '../printable.ts';

interface QueryFlags {
  server: string;
  apiKey?: string;
  dataDir?: string;
  namespace?: string;
  doc?: string[];
  topK?: string;
  mode: string;
  blendRatio?: string;
  ttftTarget?: string;
  maxTokens?: string;
  temperature?: string;
  stream: boolean;
  json?: boolean;
}

function numberFlag(name: string, value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (value.trim() === '' || !Number.isFinite(n)) throw new UsageError(`${name} must be a number, got "${value}"`);
  return n;
}

/** A count: decimal digits only, so "1e3", "1.5" and "-1" are refused here rather than sent. */
function wholeFlag(name: string, value: string | undefined, min: number, max: number, hint: string): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!/^\d+$/.test(value.trim()) || n < min || n > max) {
    const range = max === Infinity ? `of at least ${min}` : `from ${min} to ${max}`;
    throw new UsageError(`${name} must be a whole number ${range}, got "${value}"`, hint);
  }
  return n;
}

/** The request the flags ask for; bad flags are usage errors, found before anything is sent. */
function requestFor(question: string, flags: QueryFlags): QueryRequest {
  if (question.trim() === '') throw new UsageError('the question is empty', 'kdn query "What is in the manual?"');
  if (flags.mode !== 'inject' && flags.mode !== 'recompute' && flags.mode !== 'blend') {
    throw new UsageError(`--mode must be inject, blend or recompute, got "${flags.mode}"`);
  }
  const request: QueryRequest = { question, mode: flags.mode };
  const blendRatio = numberFlag('--blend-ratio', flags.blendRatio);
  if (blendRatio !== undefined) {
    if (flags.mode !== 'blend')
      throw new UsageError('--blend-ratio needs --mode blend', `kdn query "${question}" --mode blend --blend-ratio ${blendRatio}`);
    if (!(blendRatio >= 0 && blendRatio <= 1)) {
      throw new UsageError(
        `--blend-ratio must be from 0 to 1, got ${blendRatio}`,
        'the share of context tokens to recompute, e.g. --blend-ratio 0.15',
      );
    }
    request.blendRatio = blendRatio;
  }
  const ttftTarget = wholeFlag(
    '--ttft-target',
    flags.ttftTarget,
    1,
    600_000,
    "whole milliseconds: the time to first token that picks the chunks' stored level, e.g. --ttft-target 200",
  );
  if (ttftTarget !== undefined) request.ttftTargetMs = ttftTarget;
  if (flags.namespace) request.namespace = flags.namespace;
  if (flags.doc) request.documents = flags.doc;
  return { ...request, ...generationFor(flags) };
}

/** --top-k, --max-tokens and --temperature; their upper limits are the server's own (it names the flag if refused). */
function generationFor(flags: QueryFlags): Pick<QueryRequest, 'topK' | 'maxTokens' | 'temperature'> {
  const topK = wholeFlag('--top-k', flags.topK, 1, Infinity, 'the number of chunks to retrieve, e.g. --top-k 4');
  const maxTokens = wholeFlag('--max-tokens', flags.maxTokens, 1, Infinity, 'the most tokens to generate, e.g. --max-tokens 64');
  const temperature = numberFlag('--temperature', flags.temperature);
  if (temperature !== undefined && !(temperature >= 0 && temperature <= 2)) {
    throw new UsageError(`--temperature must be from 0 to 2, got ${temperature}`, '0 is greedy, e.g. --temperature 0.7');
  }
  return {
    ...(topK === undefined ? {} : { topK }),
    ...(maxTokens === undefined ? {} : { maxTokens }),
    ...(temperature === undefined ? {} : { temperature }),
  };
}

/**
 * `kdn query "<question>"`: asks kdn; prints the answer as it is generated (--no-stream: once it is whole), then
 * where its context came from.
 */
async function query(question: string, flags: QueryFlags): Promise<void> {
  const request = requestFor(question, flags);
  const client = clientFor(flags);
  if (flags.json) {
    process.stdout.write(`${JSON.stringify(await client.query(request))}\n`);
    return;
  }
  let answer: QueryResponse;
  if (flags.stream) {
    // The server trims the whole answer; streamed, its leading whitespace is held back the same way.
    let started = false;
    answer = await client.queryStream(request, (text) => {
      const shown = started ? text : text.trimStart();
      if (shown === '') return;
      started = true;
      process.stdout.write(shown);
    });
    process.stdout.write('\n');
  } else {
    answer = await client.query(request);
    process.stdout.write(`${answer.answer}\n`);
  }
  const t = answer.timings;
  const lines = [
    '',
    `context: ${answer.chunks.length} chunks, ${answer.tokens.context} tokens (${answer.tokens.reused} reused, ${answer.tokens.computed} computed incl. prompt), ${formatBytes(answer.bytes)} fetched`,
    ...(answer.level
      ? [
          `level: ${answer.level.codec} (${formatBytes(answer.level.bytes)}, ${answer.level.expectedFetchMs.toFixed(1)} ms expected at ${formatBytes(answer.level.bytesPerSecond)}/s for a ${answer.level.ttftTargetMs} ms target${answer.level.probe ? '; one level up, to sample throughput' : ''})`,
        ]
      : []),
    ...answer.chunks.map(
      (c) => `  ${c.title} #${c.index} ${c.kind} ${c.codec} ${c.tier}${c.score === null ? '' : ` score ${c.score.toFixed(2)}`}`,
    ),
    ...(answer.note ? [`note: ${answer.note}`] : []),
    ...(answer.blend
      ? [
          `blend: ${answer.blend.recomputedTokens} of ${answer.tokens.context} context tokens recomputed (${answer.blend.selection}, ratio ${answer.blend.ratio}, after ${answer.blend.fullLayers} full layers) in ${answer.blend.ms.toFixed(1)} ms`,
        ]
      : []),
    `timings (ms): retrieval ${t.retrieval.toFixed(1)}, fetch ${t.fetch.toFixed(1)}, injection ${t.injection.toFixed(1)}, prefill ${t.prefill.toFixed(1)}, ttft ${t.ttft.toFixed(1)}, total ${t.total.toFixed(1)}`,
  ];
  printLines(lines);
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
      .option(
        '--mode <mode>',
        'inject (reuse cached KV), blend (reuse it, recomputing a share of the tokens so chunks attend to each other) or recompute (from scratch, for comparison)',
        'inject',
      )
      .option('--blend-ratio <r>', 'with --mode blend: the share of context tokens to recompute, 0 to 1 (default 0.15)')
      .option(
        '--ttft-target <ms>',
        "time to first token to aim for: picks the best stored level of the chunks whose fetch fits it (default: the server's)",
      )
      .option('--max-tokens <n>', 'most tokens to generate (default 64)')
      .option('--temperature <t>', 'sampling temperature, 0 is greedy (default 0)')
      .option('--no-stream', 'print the answer once it is whole instead of as it is generated')
      .option('--json', 'print the whole response as JSON (implies --no-stream)'),
  ).action(query);
}
