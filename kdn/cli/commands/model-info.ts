import type { Command } from 'commander';
import { readModelInfo } from '../../../engine-adapter/index.ts';
import { DEFAULT_MODEL_DIR } from '../../default-model.ts';

/** `kdn model-info --model DIR`: architecture, size, KV bytes per token and fingerprint, without loading weights. */
async function modelInfo(flags: { model?: string; json?: boolean }): Promise<void> {
  const info = await readModelInfo(flags.model ?? DEFAULT_MODEL_DIR);
  if (flags.json) {
    process.stdout.write(`${JSON.stringify(info, null, 2)}\n`);
    return;
  }
  const rows: [string, string | number][] = [
    ['architecture', info.architecture],
    ['path', info.path],
    ['parameters', info.parameters.toLocaleString('en-US')],
    ['layers', info.layers],
    ['hidden size', info.hiddenSize],
    ['intermediate size', info.intermediateSize],
    ['heads', `${info.heads} (kv ${info.kvHeads}, head dim ${info.headDim})`],
    ['vocabulary', info.vocabSize],
    ['max positions', info.maxPositionEmbeddings],
    ['KV bytes/token', `${info.kvBytesPerToken} (fp16)`],
    ['fingerprint', info.fingerprint],
  ];
  for (const [k, v] of rows) process.stdout.write(`${k.padEnd(18)} ${v}\n`);
}

export function register(program: Command): void {
  program
    .command('model-info')
    .description('print a model directory’s architecture, parameters, KV bytes per token and fingerprint')
    .option('--model <dir>', 'Hugging Face model directory (default: the shipped reader model, models/kdn-reader)')
    .option('--json', 'print JSON')
    .action(modelInfo);
}
